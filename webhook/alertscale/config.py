"""config.yaml: load, substitute ${VAR}, validate (JSON Schema + semantics), fill defaults."""
import copy
import difflib
import os
import re
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml

SCHEMA = yaml.safe_load(resources.files(__package__).joinpath("config.schema.yaml").read_text())
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A config that cannot be used; .problems holds one 'path: message' line per problem."""

    def __init__(self, problems):
        super().__init__("\n".join(problems))
        self.problems = problems


def load(path):
    """Read, check and complete config.yaml; raise ConfigError listing every problem."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror})"]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise ConfigError([f"{path}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {e.problem}"]) from None
    return parse(raw)


def parse(raw):
    """Check and complete an already-parsed config document."""
    problems = []
    raw = _substitute(copy.deepcopy(raw), "", problems)
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): must be a mapping (found {type(raw).__name__})"])
    validator = jsonschema.Draft202012Validator(SCHEMA)
    problems += sorted(_describe(e) for e in validator.iter_errors(raw))
    if problems:
        raise ConfigError(problems)
    config = _fill_defaults(raw, SCHEMA)
    problems = _semantic_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _substitute(node, path, problems):
    """Replace ${VAR} in every string from the environment; a missing variable is a problem."""
    if isinstance(node, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str):
        def value(m):
            if m.group(1) not in os.environ:
                problems.append(f"{path}: environment variable {m.group(1)} is not set")
                return m.group(0)
            return os.environ[m.group(1)]
        return ENV_VAR.sub(value, node)
    return node


def _path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _describe(error):
    """One 'path: what is wrong (what was found)' line for a schema error."""
    where = _path(error.absolute_path)
    if error.validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known]
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        return f"{where}: unknown key {', '.join(hints)}"
    if error.validator == "required":
        missing = re.search(r"'([^']+)'", error.message).group(1)
        return f"{_path([*error.absolute_path, missing])}: required key is missing"
    if error.validator == "pattern" and error.schema.get("$ref") is None:
        return f"{where}: {error.instance!r} does not have the expected form ({error.validator_value})"
    found = f" (found {error.instance!r})" if not isinstance(error.instance, (dict, list)) else ""
    rule = {
        "type": lambda: f"must be of type {error.validator_value}",
        "enum": lambda: f"must be one of {', '.join(map(str, error.validator_value))}",
        "minimum": lambda: f"must be at least {error.validator_value}",
        "maximum": lambda: f"must be at most {error.validator_value}",
        "exclusiveMinimum": lambda: f"must be greater than {error.validator_value}",
        "minItems": lambda: f"needs at least {error.validator_value} item(s)",
        "minProperties": lambda: f"needs at least {error.validator_value} entry",
        "minLength": lambda: "must not be empty",
        "uniqueItems": lambda: "has duplicate items",
    }.get(error.validator, lambda: error.message)()
    return f"{where}: {rule}{found}"


def _fill_defaults(node, schema):
    """Return node with every schema default filled in, recursively."""
    if "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].split("/")[-1]]
    if isinstance(node, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
        for key, value in node.items():
            sub = props.get(key) or schema.get("additionalProperties")
            if isinstance(sub, dict):
                node[key] = _fill_defaults(value, sub)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        return [_fill_defaults(v, schema["items"]) for v in node]
    return node


def minutes(clock):
    """'09:30' -> 570."""
    hours, mins = clock.split(":")
    return int(hours) * 60 + int(mins)


def _semantic_problems(config):
    """What the schema cannot say: uniqueness, ordering, capacity, time zone."""
    problems = []
    servers, services = config["servers"], config["services"]
    lb, auto = config["load_balancer"], config["autoscaler"]
    for key in ("name", "host"):
        seen = {}
        for i, server in enumerate(servers):
            if server[key] in seen:
                problems.append(f"servers[{i}].{key}: duplicate of servers[{seen[server[key]]}] ({server[key]!r})")
            seen.setdefault(server[key], i)
    controls = [s["name"] for s in servers if s["role"] == "control"]
    if len(controls) != 1:
        problems.append(f"servers: exactly one server needs role: control (found {len(controls)})")
    ports = {lb["stats_port"]: "load_balancer.stats_port"}
    for name, svc in services.items():
        where = f"services.{name}"
        if svc["port"] in ports:
            problems.append(f"{where}.port: {svc['port']} is already used by {ports[svc['port']]}")
        ports.setdefault(svc["port"], f"{where}.port")
        if svc["min_replicas"] > svc["max_replicas"]:
            problems.append(f"{where}.min_replicas: must not exceed max_replicas "
                            f"({svc['min_replicas']} > {svc['max_replicas']})")
        if svc["scale_down_threshold"] >= svc["scale_up_threshold"]:
            problems.append(f"{where}.scale_down_threshold: must be below scale_up_threshold "
                            f"({svc['scale_down_threshold']} >= {svc['scale_up_threshold']})")
        room = sum(min(svc["max_per_server"], s["max_containers"]) for s in servers)
        if svc["max_replicas"] > room:
            problems.append(f"{where}.max_replicas: the servers hold at most {room} replicas "
                            f"(max_per_server and max_containers) (found {svc['max_replicas']})")
        check = svc["health_check"]
        if check["timeout"] >= check["interval"]:
            problems.append(f"{where}.health_check.timeout: must be below interval "
                            f"({check['timeout']} >= {check['interval']})")
    hours = auto["business_hours"]
    if minutes(hours["start"]) >= minutes(hours["end"]):
        problems.append(f"autoscaler.business_hours.start: must be before end "
                        f"({hours['start']} >= {hours['end']})")
    try:
        ZoneInfo(hours["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"autoscaler.business_hours.timezone: unknown time zone ({hours['timezone']!r})")
    if lb["https_enabled"] and not lb["cert_path"]:
        problems.append("load_balancer.cert_path: required when https_enabled is true")
    return problems


def docker_host(server):
    """The engine address of a server: its docker_host, or ssh://ssh_user@host."""
    return server["docker_host"] or f"ssh://{server['ssh_user']}@{server['host']}"


def token_file(config):
    auto = config["autoscaler"]
    return auto["token_file"] or os.path.join(auto["state_dir"], "token")


def backup_dir(config):
    backup = config["autoscaler"]["backup"]
    return backup["path"] or os.path.join(config["autoscaler"]["state_dir"], "backup")


def summary(config):
    return f"config OK: {len(config['servers'])} servers, {len(config['services'])} services"

"""config.yaml validation: the example passes; each broken config names its problem."""
import subprocess
import sys

import pytest

from alertscale import config as cfg

from ..conftest import EXAMPLE


def run_validate(path, env=None):
    return subprocess.run([sys.executable, "-m", "alertscale.cli", "validate", "-c", str(path)],
                          capture_output=True, text=True, env=env)


def test_example_is_valid(example_env):
    config = cfg.load(EXAMPLE)
    assert cfg.summary(config) == "config OK: 4 servers, 3 services"
    ollama = config["services"]["ollama"]
    assert ollama["health_check"] == {"path": "/api/tags", "interval": 10, "timeout": 5}
    assert ollama["max_per_server"] == 3 and ollama["cpus"] is None
    assert config["monitoring"]["grafana"]["admin_password"] == "s3cret"
    assert cfg.docker_host(config["servers"][1]) == "ssh://admin@192.168.1.11"


def test_validate_command_ok(example_env):
    import os
    done = run_validate(EXAMPLE, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "config OK: 4 servers, 3 services"


def set_path(data, dotted, value):
    node, *keys = data, *dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


DELETE = object()
BROKEN = [
    ("services.ollama.scale_up_treshold", 70,
     "services.ollama: unknown key 'scale_up_treshold' (did you mean 'scale_up_threshold'?)"),
    ("services.ollama.port", "11434", "services.ollama.port: must be of type integer (found '11434')"),
    ("services.ollama.port", 70000, "services.ollama.port: must be at most 65535 (found 70000)"),
    ("services.web_app_b.port", 8080, "services.web_app_b.port: 8080 is already used by services.web_app_a.port"),
    ("services.web_app_a.port", 8404, "services.web_app_a.port: 8404 is already used by load_balancer.stats_port"),
    ("services.ollama.min_replicas", 9, "services.ollama.min_replicas: must not exceed max_replicas (9 > 8)"),
    ("services.ollama.scale_down_threshold", 80,
     "services.ollama.scale_down_threshold: must be below scale_up_threshold (80 >= 75)"),
    ("services.ollama.max_replicas", 13,
     "services.ollama.max_replicas: the servers hold at most 12 replicas (max_per_server and max_containers) "
     "(found 13)"),
    ("services.ollama.health_check.timeout", 10,
     "services.ollama.health_check.timeout: must be below interval (10 >= 10)"),
    ("services.ollama.image", DELETE, "services.ollama.image: required key is missing"),
    ("autoscaler.business_hours.start", "18:00",
     "autoscaler.business_hours.start: must be before end (18:00 >= 17:00)"),
    ("autoscaler.business_hours.end", "25:00", "autoscaler.business_hours.end: '25:00' does not have the expected"),
    ("autoscaler.business_hours.timezone", "Mars/Olympus",
     "autoscaler.business_hours.timezone: unknown time zone ('Mars/Olympus')"),
    ("servers.1.name", "server1", "servers[1].name: duplicate of servers[0] ('server1')"),
    ("servers.2.host", "192.168.1.10", "servers[2].host: duplicate of servers[0] ('192.168.1.10')"),
    ("servers.0.role", "worker", "servers: exactly one server needs role: control (found 0)"),
    ("servers.1.role", "control", "servers: exactly one server needs role: control (found 2)"),
    ("servers.0.role", "boss", "servers[0].role: must be one of control, worker (found 'boss')"),
    ("services.ollama.cooldown_period", -5, "services.ollama.cooldown_period: must be at least 0 (found -5)"),
    ("services.ollama.business_hours_only", "yes",
     "services.ollama.business_hours_only: must be of type boolean (found 'yes')"),
    ("monitoring.grafana.admin_password", "${NOT_SET_ANYWHERE}",
     "monitoring.grafana.admin_password: environment variable NOT_SET_ANYWHERE is not set"),
]


@pytest.mark.parametrize("dotted,value,message", BROKEN, ids=[b[0] + "=" + str(b[1]) for b in BROKEN])
def test_broken_config_names_its_problem(example_raw, write_config, dotted, value, message):
    set_path(example_raw, dotted, value)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.parse(example_raw)
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems
    done = run_validate(write_config(example_raw))
    assert done.returncode == 1
    assert message in done.stderr


def test_yaml_syntax_error_names_line_and_column(write_config):
    path = write_config("servers:\n  - name: a\n    host: [unclosed\nservices: {}\n")
    done = run_validate(path)
    assert done.returncode == 1
    assert f"{path}:4:9: YAML syntax error: expected" in done.stderr


def test_missing_file_is_clear(tmp_path):
    done = run_validate(tmp_path / "nope.yaml")
    assert done.returncode == 1 and "cannot read (No such file or directory)" in done.stderr


def test_every_problem_is_listed_at_once(example_raw):
    set_path(example_raw, "services.ollama.port", "x")
    set_path(example_raw, "services.web_app_a.cooldown_periodd", 1)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.parse(example_raw)
    assert len(e.value.problems) == 2


def test_environment_variables_are_substituted(example_raw, monkeypatch):
    monkeypatch.setenv("OLLAMA_IMAGE", "ollama/ollama:0.5")
    example_raw["services"]["ollama"]["image"] = "${OLLAMA_IMAGE}"
    assert cfg.parse(example_raw)["services"]["ollama"]["image"] == "ollama/ollama:0.5"


def schema_fields(node, path=""):
    """Every leaf field of the schema, as dotted paths (servers[] for list items)."""
    if "$ref" in node:
        node = cfg.SCHEMA["$defs"][node["$ref"].split("/")[-1]]
    if "properties" in node:
        for key, sub in node["properties"].items():
            yield from schema_fields(sub, f"{path}.{key}" if path else key)
    elif isinstance(node.get("items"), dict) and "properties" in node["items"]:
        yield from schema_fields(node["items"], path)
    elif isinstance(node.get("additionalProperties"), dict) and "properties" in node["additionalProperties"]:
        yield from schema_fields(node["additionalProperties"], path)
    else:
        yield path


def test_configuration_reference_documents_every_field():
    doc = (EXAMPLE.parents[1] / "docs" / "configuration.md").read_text()
    sections = {}
    for block in doc.split("\n## ")[1:]:
        title, _, body = block.partition("\n")
        sections[title.split()[0]] = body
    missing = []
    for field in schema_fields(cfg.SCHEMA):
        top, _, rest = field.partition(".")
        if f"| `{rest}` |" not in sections.get(top, ""):
            missing.append(field)
    assert missing == []

"""The HTTP API: Alertmanager's webhook, the manual endpoints of PRD 6.2, metrics, OpenAPI."""
import hmac
import logging
import os
import secrets
import sys
import time
from importlib import resources

import jsonschema
import yaml
from flask import Blueprint, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from . import config as cfg

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)
OPENAPI = yaml.safe_load(resources.files(__package__).joinpath("openapi.yaml").read_text())
ALERTS_SCHEMA = OPENAPI["components"]["schemas"]["AlertmanagerPayload"]


class APIError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def read_or_create_token(path):
    """The bearer token: read from its file, or made and written there (mode 600) on first use."""
    if os.path.exists(path):
        with open(path) as f:
            token = f.read().strip()
        if not token:
            raise cfg.ConfigError([f"autoscaler.token_file: {path} is empty"])
        return token
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    # Shown once, on the terminal only (never through the logger): `alertscale token` prints it again.
    print(f"alertscale: created API token in {path}: {token}", file=sys.stderr)
    return token


def scaler():
    return current_app.extensions["alertscale"]


def service_config(name):
    if name not in scaler().config["services"]:
        raise APIError(404, f"unknown service {name!r}; known: {', '.join(scaler().config['services'])}")
    return scaler().config["services"][name]


@bp.before_request
def require_token():
    """POST endpoints need the bearer token; compared in constant time."""
    if request.method != "POST":
        return
    sent = request.headers.get("Authorization", "")
    token = current_app.config["ALERTSCALE_TOKEN"]
    if not (sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].strip().encode(), token.encode())):
        raise APIError(401, "missing or wrong bearer token (Authorization: Bearer <token>; see `alertscale token`)")


@bp.app_errorhandler(APIError)
def api_error(e):
    return jsonify(status="error", code=e.code, message=e.message), e.code


@bp.app_errorhandler(HTTPException)
def http_error(e):
    return jsonify(status="error", code=e.code, message=e.description), e.code


@bp.app_errorhandler(Exception)
def server_error(e):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify(status="error", code=500, message=f"internal error: {type(e).__name__}: {e}"), 500


@bp.get("/")
def health():
    """Liveness."""
    return jsonify(status="ok", service="alertscale")


def service_summary(name, svc):
    view = scaler().view.get(name) or scaler().observe(name)
    return {"name": name, "port": svc["port"], "image": svc["image"], "replicas": len(view["serving"]),
            "desired": scaler().desired(name), "min_replicas": svc["min_replicas"],
            "max_replicas": svc["max_replicas"], "per_server": view["per_server"],
            "in_haproxy": None if view["haproxy"] is None else len(view["haproxy"]),
            "up": any(s.get("status", "").startswith("UP") for s in (view["haproxy"] or {}).values())}


@bp.get("/status")
def status():
    """Uptime, services, servers."""
    s = scaler()
    return jsonify(status="ok", uptime_seconds=round(time.time() - current_app.config["STARTED"], 1),
                   services={n: service_summary(n, svc) for n, svc in s.config["services"].items()},
                   servers={x["name"]: bool(s.engines.reachable.get(x["name"])) for x in s.config["servers"]})


@bp.get("/services")
def services():
    """Every service with its counts."""
    return jsonify(services=[service_summary(n, svc) for n, svc in scaler().config["services"].items()])


@bp.get("/services/<name>/stats")
def service_stats(name):
    """CPU and memory of each replica, from the engines' stats API (CPU since the previous sample)."""
    svc = service_config(name)
    s = scaler()
    view = s.observe(name)
    samples = current_app.config["SAMPLES"]
    replicas = []
    for r in view["serving"]:
        entry = {k: r.get(k) for k in ("name", "server", "status", "addr", "port", "haproxy_name")}
        entry["haproxy_status"] = (view["haproxy"] or {}).get(r["haproxy_name"], {}).get("status")
        if "id" in r:
            try:
                now = s.engines.stats(r)
                before = samples.get(r["id"])
                samples[r["id"]] = now
                if before and now["time"] > before["time"]:
                    cores = svc["cpus"] or 1
                    entry["cpu_percent"] = round((now["cpu_ns"] - before["cpu_ns"]) / 1e9 /
                                                 (now["time"] - before["time"]) / cores * 100, 1)
                entry["memory_bytes"] = now["memory_bytes"]
            except Exception as e:  # stats are best effort: the replica is still listed
                entry["error"] = str(e)
        replicas.append(entry)
    return jsonify(service=name, scale_up_threshold=svc["scale_up_threshold"],
                   scale_down_threshold=svc["scale_down_threshold"], cooldown_period=svc["cooldown_period"],
                   last_action=s.state.last_action(name), desired=s.desired(name), replicas=replicas)


@bp.post("/services/<name>/scale/<direction>")
def manual_scale(name, direction):
    """Manual +1 / -1."""
    service_config(name)
    if direction not in ("up", "down"):
        raise APIError(404, f"no such action scale/{direction}: use scale/up or scale/down")
    event = scaler().scale(name, direction, "manual", manual=True)
    return jsonify(status=event["result"], event=event)


@bp.post("/services/<name>/<any(restart, 'rolling-update'):action>")
def replace_all(name, action):
    """Restart or rolling update: replace every replica, one at a time (a rolling update after a pull)."""
    service_config(name)
    event = scaler().replace_all(name, action.replace("-", "_"))
    return jsonify(status=event["result"], event=event)


@bp.get("/servers")
def servers():
    """Servers with engine reachability and containers."""
    s = scaler()
    listing = s.engines.list_all()
    out = []
    for server in s.config["servers"]:
        replicas = listing.get(server["name"])
        out.append({"name": server["name"], "host": server["host"], "role": server["role"],
                    "docker_host": cfg.docker_host(server), "reachable": replicas is not None,
                    "error": s.engines.errors.get(server["name"]),
                    "max_containers": server["max_containers"],
                    "containers": None if replicas is None else sum(r["status"] == "running" for r in replicas),
                    "replicas": {} if replicas is None else
                    {svc: sum(r["service"] == svc and r["status"] == "running" for r in replicas)
                     for svc in s.config["services"]}})
    return jsonify(servers=out)


@bp.get("/events")
def events():
    """Recent events, newest first."""
    try:
        limit = int(request.args.get("limit", 100))
        assert 1 <= limit <= 1000
    except (ValueError, AssertionError):
        raise APIError(400, f"limit: must be a whole number from 1 to 1000 (found {request.args.get('limit')!r})") \
            from None
    return jsonify(events=scaler().state.events(limit, request.args.get("service")))


@bp.post("/config/reload")
def reload_config():
    """Validate the config file; apply it only if valid, keeping a backup of the old one."""
    path = current_app.config["ALERTSCALE_CONFIG"]
    try:
        new = cfg.load(path)
    except cfg.ConfigError as e:
        scaler().state.record({"time": time.time(), "action": "config_reload", "source": "manual",
                               "result": "refused", "reason": "; ".join(e.problems)})
        raise APIError(400, "config not applied, the running one is kept: " + "; ".join(e.problems)) from None
    backup = new["autoscaler"]["backup"]
    if backup["enabled"]:  # the config that was running, before the new one applies
        backup_config(current_app.config["CONFIG_TEXT"], cfg.backup_dir(new), backup["retention_days"])
    with open(path) as f:
        text = f.read()
    current_app.extensions["alertscale_apply"](new, text)
    current_app.config["CONFIG_TEXT"] = text
    scaler().state.record({"time": time.time(), "action": "config_reload", "source": "manual",
                           "result": "done", "reason": cfg.summary(new)})
    return jsonify(status="done", message=cfg.summary(new))


def backup_config(text, directory, retention_days):
    """Keep the config that was running, dated; drop backups older than retention_days."""
    os.makedirs(directory, exist_ok=True)
    name = time.strftime("config-%Y%m%d-%H%M%S-") + f"{time.time_ns() // 1000 % 1000000:06d}.yaml"
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.startswith("config-") and time.time() - os.path.getmtime(full) > retention_days * 86400:
            os.remove(full)


def parse_alert(alert):
    """(service, direction) an alert asks for, or (None, why it is ignored)."""
    labels = alert["labels"]
    if alert["status"] != "firing":
        return None, "resolved alert: nothing to do"
    if labels.get("scale") not in ("up", "down") or not labels.get("service"):
        return None, "alert has no service and scale=up|down labels"
    if labels["service"] not in scaler().config["services"]:
        return None, f"unknown service {labels['service']!r}"
    return labels["service"], labels["scale"]


@bp.post("/alerts")
def alerts():
    """Alertmanager webhook: one step per service and direction per notification, cooldown-checked."""
    payload = request.get_json(silent=True)
    if payload is None:
        raise APIError(400, "body must be JSON (Alertmanager webhook payload, version 4)")
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(ALERTS_SCHEMA).iter_errors(payload))
    if error:
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        raise APIError(400, f"invalid Alertmanager payload at {where}: {error.message}")
    results, asked = [], set()
    for alert in payload["alerts"]:
        service, direction = parse_alert(alert)
        name = alert["labels"].get("alertname", "")
        if service is None or (service, direction) in asked:
            reason = direction if service is None else "same step already asked in this notification"
            event = {"time": time.time(), "service": alert["labels"].get("service"), "action": "alert",
                     "source": "alert", "result": "ignored", "reason": f"{name}: {reason}"}
            scaler().state.record(event)
            log.info("alert %s ignored: %s", name, reason)
        else:
            asked.add((service, direction))
            event = scaler().scale(service, direction, "alert", cause=f"{name} firing")
        results.append(event)
    return jsonify(status="ok", results=results)


@bp.get("/metrics")
def metrics():
    """Prometheus exposition."""
    return generate_latest(current_app.extensions["alertscale_metrics"].registry), 200, \
        {"Content-Type": CONTENT_TYPE_LATEST}


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI document."""
    return jsonify(OPENAPI)

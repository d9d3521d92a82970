"""The webhook and engine against real parts: dockerd on 4 servers (srv1 local, the others over
ssh://), HAProxy's runtime API, alertscale under gunicorn. No Prometheus here: alerts are posted
as Alertmanager would post them, so nothing else acts meanwhile."""
import os
import signal
import threading
import time
from datetime import datetime, timezone

import pytest
import requests
import yaml

from ..rig import rig

pytestmark = pytest.mark.rig


def test_manual_scale_up_puts_a_second_replica_into_rotation(control):
    c = control()
    assert len(c.whoami()) == 1
    r = c.post("/services/ollama/scale/up")
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    event = r.json()["event"]
    assert (event["replicas_before"], event["replicas_after"], event["source"]) == (1, 2, "manual")
    assert event["server"] != "srv1"  # placement: the server with the fewest replicas of the service
    c.wait_replicas("ollama", 2)
    assert len(c.whoami(n=20)) == 2
    servers = {s["name"]: s for s in c.get("/servers").json()["servers"]}
    assert all(s["reachable"] for s in servers.values())
    assert servers[event["server"]]["replicas"]["ollama"] == 1
    stats = c.get("/services/ollama/stats").json()
    assert len(stats["replicas"]) == 2 and all("memory_bytes" in x for x in stats["replicas"])


def test_alert_scales_up_once_inside_the_cooldown(control):
    c = control()
    first = c.alert("ollama", "up").json()["results"][0]
    assert first["result"] == "done" and first["source"] == "alert", first
    again = c.alert("ollama", "up").json()["results"][0]  # Alertmanager repeats and retries
    assert again["result"] == "refused" and again["reason"].startswith("cooldown"), again
    assert c.wait_replicas("ollama", 2)["replicas"] == 2
    metrics = c.get("/metrics").text
    assert 'alertscale_scale_actions_total{direction="up",result="done",service="ollama"} 1.0' in metrics
    assert 'alertscale_scale_actions_total{direction="up",result="refused",service="ollama"} 1.0' in metrics


def test_several_alerts_in_one_payload_take_one_step(control):
    c = control(**{"services.ollama.cooldown_period": 0})
    payload = {"version": "4", "alerts": [
        {"status": "firing", "labels": {"alertname": "AlertscaleServiceCPUHigh", "service": "ollama", "scale": "up"}},
        {"status": "firing", "labels": {"alertname": "AlertscaleServiceCPUHigh", "service": "ollama", "scale": "up",
                                        "instance": "other"}},
        {"status": "resolved", "labels": {"alertname": "AlertscaleServiceCPULow", "service": "ollama",
                                          "scale": "down"}},
        {"status": "firing", "labels": {"alertname": "AlertscaleServiceCPUHigh", "service": "nope", "scale": "up"}}]}
    results = c.post("/alerts", json=payload).json()["results"]
    assert [r["result"] for r in results] == ["done", "ignored", "ignored", "ignored"]
    assert "unknown service 'nope'" in results[3]["reason"]
    assert "resolved" in results[2]["reason"]
    c.wait_replicas("ollama", 2)


def test_scale_down_drains_a_request_in_flight(control):
    c = control()
    c.post("/services/ollama/scale/up")
    c.wait_replicas("ollama", 2)
    results = []

    def slow_request():  # about 1.3 s of CPU in the replica
        try:
            results.append(requests.get("http://127.0.0.1:11434/cgi-bin/burn?300000", timeout=30).status_code)
        except requests.RequestException as e:
            results.append(repr(e))
    threads = [threading.Thread(target=slow_request) for _ in range(4)]  # round robin: both replicas busy
    for t in threads:
        t.start()
    time.sleep(0.3)
    r = c.post("/services/ollama/scale/down").json()
    for t in threads:
        t.join()
    assert r["status"] == "done", r
    assert results == [200, 200, 200, 200]
    c.wait_replicas("ollama", 1)
    assert len(c.whoami()) == 1


def test_bounds_refuse_and_change_nothing(control):
    c = control()
    down = c.post("/services/ollama/scale/down").json()
    assert down["status"] == "refused" and down["event"]["reason"] == "at min_replicas (1)"
    for _ in range(2):
        assert c.post("/services/ollama/scale/up").json()["status"] == "done"
    up = c.post("/services/ollama/scale/up").json()
    assert up["status"] == "refused" and up["event"]["reason"] == "at max_replicas (3)"
    assert c.wait_replicas("ollama", 3)["per_server"] == {"srv1": 1, "srv2": 1, "srv3": 1}


def test_outside_business_hours_alerts_are_refused_and_manual_is_not(control):
    today = datetime.now(timezone.utc).strftime("%a").lower()
    other_days = [d for d in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"] if d != today]
    c = control(**{"autoscaler.business_hours.days": other_days})
    r = c.alert("ollama", "up").json()["results"][0]
    assert r["result"] == "refused" and r["reason"].startswith("outside business hours"), r
    # web_app is not business_hours_only in this config: it scales at any hour.
    assert c.post("/services/ollama/scale/up").json()["status"] == "done"
    c.wait_replicas("ollama", 2)


def test_unknown_service_bad_payload_and_missing_token_change_nothing(control):
    c = control()
    before = len(c.events(limit=1000))
    assert c.post("/services/nope/scale/up").status_code == 404
    assert c.post("/services/nope/scale/up").json()["message"].startswith("unknown service 'nope'")
    bad = [b"not json", {"version": "4"}, {"version": "3", "alerts": []},
           {"version": "4", "alerts": [{"status": "firing"}]},
           {"version": "4", "alerts": [{"status": "burning", "labels": {}}]}]
    for body in bad:
        r = c.post("/alerts", data=body) if isinstance(body, bytes) else c.post("/alerts", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["status"] == "error" and r.json()["message"]
    assert "invalid Alertmanager payload at alerts/0" in c.post(
        "/alerts", json={"version": "4", "alerts": [{"status": "firing"}]}).json()["message"]
    for path in ("/alerts", "/services/ollama/scale/up", "/config/reload"):
        r = c.post(path, token=False, json={"version": "4", "alerts": []})
        assert r.status_code == 401, path
        assert c.token not in r.text
    r = requests.post("http://127.0.0.1:8000/services/ollama/scale/up", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert len(c.events(limit=1000)) == before
    assert c.replicas("ollama")["replicas"] == 1
    assert c.token not in (rig.RUN / "logs" / "alertscale.log").read_text()


def test_events_and_cooldown_survive_kill_9_and_haproxy_is_resynced(control):
    c = control()
    assert c.alert("ollama", "up").json()["results"][0]["result"] == "done"
    c.wait_replicas("ollama", 2)
    pid = int((rig.RUN / "pids" / "alertscale").read_text())
    os.kill(pid, signal.SIGKILL)
    rig.stop("alertscale")
    # While alertscale is down, HAProxy loses a server (as after a HAProxy reload).
    name = next(iter(c.haproxy_states("ollama")))
    for cmd in (f"set server ollama/{name} state maint", f"del server ollama/{name}"):
        rig.sh("socat", "-", f"UNIX-CONNECT:{rig.RUN / 'haproxy.sock'}", input=cmd + "\n")
    assert len(c.haproxy_states("ollama")) == 1
    rig.spawn("alertscale", [rig.BIN / "alertscale", "serve", "-c", c.info["config"]])
    rig.wait_for("alertscale", lambda: requests.get("http://127.0.0.1:8000/", timeout=1).ok)
    c.wait_replicas("ollama", 2, timeout=30)
    assert len(c.whoami(n=20)) == 2
    again = c.alert("ollama", "up").json()["results"][0]
    assert again["result"] == "refused" and again["reason"].startswith("cooldown"), again
    actions = [(e["action"], e["result"]) for e in c.events()]
    assert ("scale_up", "done") in actions and ("haproxy_add", "done") in actions


def test_haproxy_restart_keeps_the_replicas_in_rotation(control):
    c = control()
    c.post("/services/ollama/scale/up")
    c.wait_replicas("ollama", 2)
    written = (c.info["out"] / "haproxy.cfg").read_text().split("\nbackend ollama\n")[1].split("\nbackend ")[0]
    assert written.count("    server srv") == 2  # the replicas are in the file HAProxy restarts from
    rig.stop("haproxy")
    rig.spawn("haproxy", ["haproxy", "-db", "-f", c.info["out"] / "haproxy.cfg"])
    # Within one reconcile interval (check_interval: 10 s), both replicas serve again.
    c.wait_replicas("ollama", 2, timeout=15)
    assert len(c.whoami(n=20)) == 2


def wait_replaced(c, name, timeout):
    """Wait until the replica `name` is gone from ollama and one replica serves again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [r["name"] for r in c.get("/services/ollama/stats").json()["replicas"]]
        if names and name not in names:
            break
        time.sleep(1)
    c.wait_replicas("ollama", 1)


def test_exited_replica_is_replaced(control):
    c = control()
    victim = c.get("/services/ollama/stats").json()["replicas"][0]
    rig.docker(victim["server"], "kill", victim["name"])
    wait_replaced(c, victim["name"], 30)
    assert victim["name"] not in [r["name"] for r in c.get("/services/ollama/stats").json()["replicas"]]
    assert any(e["action"] == "remove_dead" for e in c.events(service="ollama"))


def test_restart_and_rolling_update_replace_one_at_a_time_without_errors(control):
    c = control()
    c.post("/services/ollama/scale/up")
    c.wait_replicas("ollama", 2)
    old = {r["name"] for r in c.get("/services/ollama/stats").json()["replicas"]}
    failures, stop = [], threading.Event()

    def traffic():
        while not stop.is_set():
            try:
                if requests.get("http://127.0.0.1:11434/api/tags", timeout=5).status_code != 200:
                    failures.append("status")
            except requests.RequestException as e:
                failures.append(repr(e))
    t = threading.Thread(target=traffic)
    t.start()
    try:
        for action in ("restart", "rolling-update"):
            r = c.post(f"/services/ollama/{action}").json()
            assert r["status"] == "done" and len(r["event"]["detail"]["replaced"]) == 2, r
    finally:
        stop.set()
        t.join()
    assert failures == []
    c.wait_replicas("ollama", 2)
    assert not old & {r["name"] for r in c.get("/services/ollama/stats").json()["replicas"]}


def test_config_reload_applies_a_valid_file_and_keeps_the_old_one_otherwise(control):
    c = control()
    path = c.info["config"]
    good = yaml.safe_load(path.read_text())
    broken = dict(good, services={**good["services"], "ollama": {**good["services"]["ollama"], "port": "x"}})
    path.write_text(yaml.safe_dump(broken))
    r = c.post("/config/reload")
    assert r.status_code == 400 and "services.ollama.port: must be of type integer" in r.json()["message"]
    assert c.replicas("ollama")["min_replicas"] == 1
    good["services"]["ollama"]["min_replicas"] = 2
    path.write_text(yaml.safe_dump(good))
    r = c.post("/config/reload")
    assert r.status_code == 200, r.text
    c.wait_replicas("ollama", 2, timeout=30)
    # The daily copy made at start, and the config that was running, kept before the new one applied.
    backups = sorted((rig.DATA / "state" / "backup").glob("config-*.yaml"))
    assert len(backups) == 2
    assert yaml.safe_load(backups[-1].read_text())["services"]["ollama"]["min_replicas"] == 1


def test_openapi_lists_every_endpoint(control):
    c = control(wait=False)
    paths = set(c.get("/openapi.json").json()["paths"])
    assert {"/", "/status", "/services", "/services/{name}/stats", "/services/{name}/scale/up",
            "/services/{name}/scale/down", "/services/{name}/restart", "/services/{name}/rolling-update",
            "/servers", "/events", "/config/reload", "/metrics", "/alerts"} <= paths
    assert c.get("/").json()["status"] == "ok"
    assert c.get("/events?limit=0").status_code == 400


def test_a_replica_failing_its_health_check_is_replaced(control):
    c = control()
    victim = c.get("/services/ollama/stats").json()["replicas"][0]
    rig.docker(victim["server"], "exec", victim["name"], "/bin/busybox", "rm", "/www/api/tags")
    # HAProxy marks it DOWN within two checks (2 s); three reconcile passes (10 s) later it is replaced.
    wait_replaced(c, victim["name"], 60)
    event = next(e for e in c.events(service="ollama") if e["action"] == "remove_dead")
    assert event["container"] == victim["name"] and "DOWN in HAProxy" in event["reason"]

"""End to end on the rig: load through HAProxy -> cAdvisor-shaped metrics -> Prometheus rules ->
Alertmanager -> alertscale -> a replica on another server. Nothing here posts alerts by hand."""
import os
import signal
import time
from datetime import datetime, timezone

import pytest
import requests

from ..rig import rig

pytestmark = pytest.mark.rig


def scale_events(c, service="ollama"):
    return [(e["action"], e["result"], e.get("source")) for e in c.events(service=service, limit=1000)
            if e["action"].startswith("scale_")]


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout}s")


def test_load_scales_out_to_max_and_back_to_min(control):
    c = control(pipeline=True)
    started = time.monotonic()
    load = rig.Load(clients=4)
    try:
        wait_until("a second replica", lambda: c.replicas("ollama")["replicas"] >= 2, 90)
        c.wait_replicas("ollama", 2, timeout=10)
        assert len(c.whoami(n=20)) >= 2  # the new replica answers through HAProxy
        print(f"overload to a second serving replica: {time.monotonic() - started:.0f}s")
        wait_until("max_replicas", lambda: c.replicas("ollama")["replicas"] == 3, 150)
        assert c.wait_replicas("ollama", 3)["per_server"] == {"srv1": 1, "srv2": 1, "srv3": 1}
        time.sleep(20)  # still overloaded at max: asked again, refused, still 3
        assert c.replicas("ollama")["replicas"] == 3
    finally:
        counts = load.stop()
    assert counts["failed"] == 0, counts
    wait_until("back to min_replicas", lambda: c.replicas("ollama")["replicas"] == 1, 300)
    events = scale_events(c)
    assert events.count(("scale_up", "done", "alert")) == 2
    assert events.count(("scale_down", "done", "alert")) == 2
    assert c.replicas("web_app")["replicas"] == 1  # independent: web_app had no load


def test_steady_load_between_the_thresholds_takes_no_action_for_5_minutes(control):
    c = control(pipeline=True)
    load = rig.Load(clients=1, turns=200000, paced=True)  # about half of the replica's CPU limit
    try:
        time.sleep(40)
        samples = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(30)
            r = requests.get("http://127.0.0.1:9090/api/v1/query",
                                 params={"query": 'service:container_cpu_usage:percent_avg{service="ollama"}'})
            result = r.json()["data"]["result"]
            samples.append(round(float(result[0]["value"][1])) if result else None)
    finally:
        counts = load.stop()
    print("ollama CPU % every 30 s:", samples)
    assert all(s is not None and 25 < s < 75 for s in samples), samples
    assert scale_events(c) == []
    assert counts["failed"] == 0


def test_outside_business_hours_load_changes_nothing(control):
    today = datetime.now(timezone.utc).strftime("%a").lower()
    c = control(pipeline=True, **{"autoscaler.business_hours.days":
                                  [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today]})
    load = rig.Load(clients=4)
    try:
        time.sleep(75)  # inside business hours the first step comes after about 30 s
        r = requests.get("http://127.0.0.1:9090/api/v1/query",
                             params={"query": 'service:container_cpu_usage:percent_avg{service="ollama"}'})
        assert float(r.json()["data"]["result"][0]["value"][1]) > 75  # overloaded all the same
    finally:
        load.stop()
    assert scale_events(c) == []
    assert c.replicas("ollama")["replicas"] == 1


def test_a_server_taken_away_is_replaced_on_the_others_and_its_surplus_goes_when_it_returns(control):
    c = control(pipeline=True, **{"services.ollama.min_replicas": 2})
    assert c.replicas("ollama")["per_server"] == {"srv1": 1, "srv2": 1}
    rig.sh("ip", "link", "set", "veth-srv2", "down")  # a partition: srv2 is gone to the control server
    try:
        wait_until("a replacement", lambda: c.replicas("ollama")["per_server"].get("srv3") == 1, 60)
        c.wait_replicas("ollama", 2, timeout=30, in_haproxy=3)  # UP: srv1's and srv3's; srv2's is DOWN
        assert "srv2" not in {r["server"] for r in c.get("/services/ollama/stats").json()["replicas"]}
        assert len(c.whoami(n=20)) == 2
        servers = {s["name"]: s for s in c.get("/servers").json()["servers"]}
        assert servers["srv2"]["reachable"] is False and servers["srv2"]["error"]
    finally:
        rig.sh("ip", "link", "set", "veth-srv2", "up")
    # srv2 is back with its old replica running: the surplus goes, the returned one first.
    wait_until("the surplus removed", lambda: c.replicas("ollama")["per_server"] == {"srv1": 1, "srv3": 1}, 60)
    c.wait_replicas("ollama", 2)
    assert any(e["action"] == "remove_surplus" and e["server"] == "srv2" for e in c.events(service="ollama"))


def test_an_engine_lost_alone_keeps_its_replicas_serving_without_duplicates(control):
    c = control(pipeline=True, **{"services.ollama.min_replicas": 2})
    assert c.replicas("ollama")["per_server"] == {"srv1": 1, "srv2": 1}
    pid = int((rig.RUN / "pids" / "srv2-dockerd").read_text())
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)  # the engine is gone, its containers are not
    try:
        wait_until("srv2 unreachable", lambda: not next(
            s for s in c.get("/servers").json()["servers"] if s["name"] == "srv2")["reachable"], 60)
        time.sleep(25)  # more than two reconcile passes
        assert c.replicas("ollama")["per_server"] == {"srv1": 1, "srv2": 1}  # srv2's still counts: HAProxy sees it
        assert len(c.whoami(n=20)) == 2
        assert not [e for e in c.events(service="ollama") if e["action"] == "replace"
                    and e["result"] == "done" and e["time"] > killed_at]
        metrics = c.get("/metrics").text
        assert 'alertscale_engine_up{server="srv2"} 0.0' in metrics
    finally:
        rig.restart_dockerd(2)


def test_dashboard_queries_run_on_the_live_prometheus(control):
    """Grafana cannot be installed here: its dashboard's queries are run on the rig's Prometheus."""
    import json
    dashboard = json.loads((rig.ROOT / "grafana" / "dashboards" / "alertscale.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    c = control(pipeline=True)
    c.post("/services/ollama/scale/up")  # one action, for the actions panels
    empty = ["ALERTS", "histogram_quantile", "changes("]  # may rightly be empty on a quiet rig
    deadline = time.monotonic() + 90
    while True:
        answers = {e: requests.get("http://127.0.0.1:9090/api/v1/query", params={"query": e}).json() for e in exprs}
        assert all(a["status"] == "success" for a in answers.values()), answers
        blank = [e for e, a in answers.items() if not a["data"]["result"] and not any(x in e for x in empty)]
        if not blank or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert blank == []

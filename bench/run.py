"""Benchmarks on the rig (real dockerd, sshd, HAProxy, Prometheus, Alertmanager, alertscale).

    .venv/bin/python bench/run.py [--runs 5] [--skip-pipeline]     (as root; `make bench`)

Measures and prints, then writes bench/results.json:
  alert_to_serving   POST /alerts -> the new replica's first answer through HAProxy
  status_latency     GET /status at 1 and 20 concurrent clients (p50, p99)
  overload_to_serving  sustained CPU load -> Prometheus -> Alertmanager -> alertscale ->
                     a second replica answering through HAProxy (fresh control plane each run)
  steady_actions     scale actions during 5 minutes of load between the thresholds
  memory_pss_mb      the control plane's memory (PSS) after the runs
"""
import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.rig import rig  # noqa: E402

API = "http://127.0.0.1:8000"
SERVERS = 4


def token(info):
    return {"Authorization": f"Bearer {info['token']}"}


def hostnames(n=8):
    return {requests.get("http://127.0.0.1:11434/cgi-bin/whoami", timeout=5).text.strip() for _ in range(n)}


def wait_new_hostname(known, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fresh = hostnames(4) - known
        except requests.RequestException:
            fresh = set()
        if fresh:
            return fresh
        time.sleep(0.05)
    raise TimeoutError("no new replica answered")


def replicas():
    return next(s for s in requests.get(API + "/services").json()["services"] if s["name"] == "ollama")["replicas"]


def bench_alert_to_serving(runs):
    info = rig.control_up(rig.config_for(SERVERS, **{"services.ollama.cooldown_period": 0}), pipeline=False)
    rig.wait_for("min replicas", lambda: replicas() == 1)
    alert = {"version": "4", "alerts": [{"status": "firing", "labels": {
        "alertname": "AlertscaleServiceCPUHigh", "service": "ollama", "scale": "up"}}]}
    times = []
    for _ in range(runs):
        known = hostnames()
        started = time.monotonic()
        r = requests.post(API + "/alerts", json=alert, headers=token(info), timeout=60).json()
        assert r["results"][0]["result"] == "done", r
        wait_new_hostname(known)
        times.append(time.monotonic() - started)
        requests.post(API + "/services/ollama/scale/down", headers=token(info), timeout=60)
    rig.control_down()
    return {"runs": len(times), "median_s": round(statistics.median(times), 3), "worst_s": round(max(times), 3),
            "all_s": [round(t, 3) for t in times]}


def bench_status_latency():
    rig.control_up(rig.config_for(SERVERS), pipeline=False)
    rig.wait_for("min replicas", lambda: replicas() == 1)
    out = {}
    for clients in (1, 20):
        latencies, lock = [], threading.Lock()

        def client():
            with requests.Session() as s:
                for _ in range(200 if clients == 1 else 50):
                    t = time.perf_counter()
                    s.get(API + "/status", timeout=10).raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - t)
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        latencies.sort()
        out[f"{clients}_clients"] = {"requests": len(latencies),
                                     "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
                                     "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1)}
    rig.control_down()
    return out


def bench_overload_to_serving(runs):
    times = []
    for _ in range(runs):
        rig.control_up(rig.config_for(SERVERS), pipeline=True)
        rig.wait_for("min replicas", lambda: replicas() == 1)
        time.sleep(15)  # Prometheus has scraped the replica a few times: a steady start
        known = hostnames()
        started = time.monotonic()
        load = rig.Load(clients=4)
        try:
            wait_new_hostname(known, timeout=120)
            times.append(time.monotonic() - started)
        finally:
            load.stop()
        rig.control_down()
    return {"runs": len(times), "median_s": round(statistics.median(times), 1), "worst_s": round(max(times), 1),
            "all_s": [round(t, 1) for t in times]}


def bench_steady(seconds=300):
    rig.control_up(rig.config_for(SERVERS), pipeline=True)
    rig.wait_for("min replicas", lambda: replicas() == 1)
    load = rig.Load(clients=1, turns=200000, paced=True)
    started = time.time()
    time.sleep(seconds)
    load.stop()
    events = requests.get(API + "/events", params={"limit": 1000}).json()["events"]
    actions = [e for e in events if e["action"].startswith("scale_") and e["time"] >= started]
    memory = memory_pss_mb()
    rig.control_down()
    return {"seconds": seconds, "actions": len(actions)}, memory


def pss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_pss_mb():
    """PSS of each control-plane process and its children (gunicorn's worker, say)."""
    out = {}
    for name in ("haproxy", "prometheus", "alertmanager", "alertscale"):
        pid = int((rig.RUN / "pids" / name).read_text())
        pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        out[name] = round(sum(pss_kb(p) for p in pids) / 1024, 1)
    out["total"] = round(sum(out.values()), 1)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-pipeline", action="store_true", help="only the webhook benchmarks")
    args = parser.parse_args()
    rig.servers_up(SERVERS)
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "servers": SERVERS}
    try:
        results["alert_to_serving"] = bench_alert_to_serving(args.runs)
        print("alert_to_serving", results["alert_to_serving"], flush=True)
        results["status_latency"] = bench_status_latency()
        print("status_latency", results["status_latency"], flush=True)
        if not args.skip_pipeline:
            results["overload_to_serving"] = bench_overload_to_serving(args.runs)
            print("overload_to_serving", results["overload_to_serving"], flush=True)
            results["steady_actions"], results["memory_pss_mb"] = bench_steady()
            print("steady_actions", results["steady_actions"], "memory_pss_mb", results["memory_pss_mb"])
    finally:
        rig.down()
    (Path(__file__).parent / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Shared fixtures. Tests marked `rig` need root and the rig (tests/rig/rig.py)."""
import copy
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from .rig import rig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "config.yaml"


def pytest_configure(config):
    config.addinivalue_line("markers", "rig: needs the rig of network-namespace servers (root)")


@pytest.fixture
def example_env(monkeypatch):
    """The example's ${GRAFANA_PASSWORD}, as GitLab CI would provide it."""
    monkeypatch.setenv("GRAFANA_PASSWORD", "s3cret")


@pytest.fixture
def example_raw(example_env):
    """examples/config.yaml as a dict, to break in tests."""
    return copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict to a file and return its path."""
    def write(data, name="config.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
        return path
    return write


# --- the rig: real dockerd, sshd, HAProxy, Prometheus, Alertmanager, alertscale ---

API = "http://127.0.0.1:8000"


class Control:
    """A running control plane on the rig, and the requests tests make to it."""

    def __init__(self, info, servers):
        self.info, self.servers = info, servers
        self.token = info["token"]

    def get(self, path, **kw):
        r = requests.get(API + path, timeout=30, **kw)
        return r

    def post(self, path, token=True, **kw):
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        return requests.post(API + path, headers=headers, timeout=120, **kw)

    def replicas(self, service):
        return next(s for s in self.get("/services").json()["services"] if s["name"] == service)

    def wait_replicas(self, service, count, timeout=60, in_haproxy=None):
        """Wait until the service has `count` replicas serving, UP in HAProxy (which lists in_haproxy)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.replicas(service)
            if s["replicas"] == count and s["in_haproxy"] == (in_haproxy or count) and \
                    self.haproxy_up(service) == count:
                return s
            time.sleep(0.5)
        raise AssertionError(f"{service}: not {count} replicas after {timeout}s: {s}, {self.haproxy_states(service)}")

    def haproxy_states(self, service):
        out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{rig.RUN / 'haproxy.sock'}"], input="show stat\n",
                             capture_output=True, text=True).stdout
        rows = [line.split(",") for line in out.splitlines() if line.startswith(f"{service},")]
        return {r[1]: r[17] for r in rows if r[1] not in ("BACKEND", "FRONTEND")}

    def haproxy_up(self, service):
        return sum(state.startswith("UP") for state in self.haproxy_states(service).values())

    def whoami(self, port=11434, n=12):
        """Container host names that answered n requests through HAProxy's frontend."""
        return {requests.get(f"http://127.0.0.1:{port}/cgi-bin/whoami", timeout=10).text.strip()
                for _ in range(n)}

    def events(self, **params):
        return self.get("/events", params=params).json()["events"]

    def alert(self, service, scale, status="firing", alertname=None):
        alertname = alertname or ("AlertscaleServiceCPUHigh" if scale == "up" else "AlertscaleServiceCPULow")
        payload = {"version": "4", "status": status, "receiver": "alertscale", "groupKey": "{}:{}",
                   "alerts": [{"status": status, "labels": {"alertname": alertname, "service": service,
                                                            "scale": scale, "severity": "info"},
                               "annotations": {}, "startsAt": "2026-12-03T10:00:00Z", "fingerprint": "abc"}]}
        return self.post("/alerts", json=payload)


@pytest.fixture(scope="session")
def rig_servers():
    """Four servers in network namespaces, for the whole session; torn down at the end."""
    if os.geteuid() != 0:
        pytest.skip("the rig needs root (network namespaces, dockerd)")
    rig.servers_up(4)
    yield 4
    rig.down()


@pytest.fixture
def control(rig_servers):
    """Start a fresh control plane: start(pipeline=False, **config overrides) -> Control."""
    def start(pipeline=False, wait=True, **overrides):
        rig.control_down()
        c = Control(rig.control_up(rig.config_for(rig_servers, **overrides), pipeline=pipeline), rig_servers)
        if wait:
            for service, svc in yaml.safe_load(c.info["config"].read_text())["services"].items():
                c.wait_replicas(service, svc.get("min_replicas", 1))
        return c
    yield start
    rig.control_down()

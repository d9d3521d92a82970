"""The Docker engines of the servers: one client each (unix, tcp+TLS, or ssh through an OpenSSH socket forward)."""
import atexit
import ipaddress
import logging
import os
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import docker
import docker.errors
import requests

from . import config as cfg

log = logging.getLogger(__name__)
LABEL_SERVICE, LABEL_SERVER, LABEL_GENERATION = "alertscale.service", "alertscale.server", "alertscale.generation"
TIMEOUT = 8  # seconds for any one engine call, so a lost server never holds up the others
RETRY_AFTER = 10  # seconds an engine that failed is not asked again, so a lost server costs no API call time


class EngineUnreachable(Exception):
    """A server's Docker engine did not answer."""


class SSHForward:
    """A kept-open `ssh -L local.sock:remote.sock`: the Docker SDK then talks to a local unix socket."""

    def __init__(self, url, server, run_dir):
        self.url, self.server = urlparse(url), server
        self.local = os.path.join(run_dir, f"{server['name']}.docker.sock")
        self.known_hosts = os.path.join(run_dir, "known_hosts")
        self.proc = None

    def socket(self):
        """The local socket path, (re)starting ssh if it is not running."""
        if self.proc and self.proc.poll() is None and os.path.exists(self.local):
            return self.local
        self.close()
        if os.path.exists(self.local):
            os.unlink(self.local)
        remote = self.url.path or "/var/run/docker.sock"
        argv = ["ssh", "-nNT", "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
                "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=5",
                "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-L", f"{self.local}:{remote}"]
        if self.server["ssh_key"]:
            argv += ["-i", self.server["ssh_key"]]
        if self.url.port:
            argv += ["-p", str(self.url.port)]
        argv.append(f"{self.url.username or self.server['ssh_user']}@{self.url.hostname}")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(self.local):
                return self.local
            time.sleep(0.05)
        err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.poll() is not None else ""
        self.close()
        raise EngineUnreachable(f"ssh to {self.url.hostname} failed: {err or 'timed out'}")

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


class Engines:
    """Every server's engine, and the replicas on them (containers labelled alertscale.service)."""

    def __init__(self, servers, run_dir, generation=""):
        os.makedirs(run_dir, exist_ok=True)
        self.servers = {s["name"]: s for s in servers}
        self.run_dir, self.generation = run_dir, generation
        self.clients, self.forwards, self.reachable = {}, {}, {}
        self.errors, self.failed_at = {}, {}
        self.locks = {name: threading.Lock() for name in self.servers}
        self.pool = ThreadPoolExecutor(max(4, len(servers)))
        atexit.register(self.close)  # no ssh forward outlives the process

    def client(self, name):
        """The DockerClient of a server; raises EngineUnreachable."""
        server = self.servers[name]
        url = cfg.docker_host(server)
        with self.locks[name]:
            if url.startswith("ssh://"):
                forward = self.forwards.setdefault(name, SSHForward(url, server, self.run_dir))
                url = "unix://" + forward.socket()
            # One client per engine address; a new one only when the address changes (a new ssh forward).
            if self.clients.get(name, (None,))[0] != url:
                tls = None
                if url.startswith("tcp://") and server.get("tls_cert_path"):
                    d = server["tls_cert_path"]
                    tls = docker.tls.TLSConfig(client_cert=(f"{d}/cert.pem", f"{d}/key.pem"),
                                               ca_cert=f"{d}/ca.pem", verify=True)
                self.clients[name] = (url, docker.DockerClient(base_url=url, timeout=TIMEOUT, tls=tls))
            return self.clients[name][1]

    def call(self, name, fn):
        """Run fn(client) against a server, recording whether its engine answered."""
        if time.monotonic() - self.failed_at.get(name, -RETRY_AFTER) < RETRY_AFTER:
            raise EngineUnreachable(f"{name}: {self.errors.get(name)} (retrying within {RETRY_AFTER}s)")
        try:
            result = fn(self.client(name))
        except (EngineUnreachable, requests.exceptions.RequestException, docker.errors.DockerException) as e:
            if isinstance(e, docker.errors.APIError) and e.response is not None and e.response.status_code < 500:
                self.reachable[name] = True
                raise
            self.reachable[name], self.errors[name], self.failed_at[name] = False, str(e), time.monotonic()
            if name in self.forwards:
                self.forwards[name].close()
            raise EngineUnreachable(f"{name}: {e}") from e
        self.reachable[name] = True
        self.errors.pop(name, None)
        self.failed_at.pop(name, None)
        return result

    def list_all(self):
        """{server: [replica] or None when its engine is unreachable}, asked of all engines at once."""
        def one(name):
            try:
                return self.call(name, lambda c: [self._replica(name, x) for x in
                                                  c.containers.list(all=True, filters={"label": LABEL_SERVICE})])
            except EngineUnreachable:
                return None
        return dict(zip(self.servers, self.pool.map(one, self.servers)))

    def _replica(self, server, container):
        ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        bound = [b for bindings in ports.values() if bindings for b in bindings]
        return {"id": container.id, "name": container.name, "server": server,
                "service": container.labels.get(LABEL_SERVICE), "status": container.status,
                "created": container.attrs.get("Created", ""),
                "port": int(bound[0]["HostPort"]) if bound else None,
                "addr": self.publish_address(server), "haproxy_name": f"{server}-{container.id[:12]}"}

    def publish_address(self, name):
        """Where a replica's port is published: the server's address (all interfaces for a host name)."""
        host = self.servers[name]["host"]
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return host

    def start(self, name, service, svc):
        """Start one replica of a service on a server; return it (not yet checked healthy)."""
        addr = self.publish_address(name)
        bind = addr if addr[0].isdigit() else "0.0.0.0"
        kwargs = {"name": f"alertscale-{service}-{name}-{uuid.uuid4().hex[:6]}",
                  "labels": {LABEL_SERVICE: service, LABEL_SERVER: name, LABEL_GENERATION: self.generation,
                             "alertscale.image": svc["image"]},
                  "environment": {k: str(v) for k, v in svc["environment"].items()},
                  "volumes": svc["volumes"], "detach": True,
                  "ports": {f"{svc.get('container_port') or svc['port']}/tcp": (bind, None)}}
        if svc["cpus"]:
            kwargs["nano_cpus"] = int(svc["cpus"] * 1e9)
        if svc["memory"]:
            kwargs["mem_limit"] = svc["memory"]

        def run(client):
            container = client.containers.run(svc["image"], **kwargs)
            container.reload()
            return self._replica(name, container)
        return self.call(name, run)

    def remove(self, replica, grace):
        """Stop a replica gracefully (SIGTERM, then SIGKILL after grace s) and remove it."""
        def stop(client):
            try:
                container = client.containers.get(replica["id"])
            except docker.errors.NotFound:
                return
            if container.status == "running":
                container.stop(timeout=grace)
            container.remove(force=True)
        self.call(replica["server"], stop)  # the SDK gives stop() grace seconds on top of TIMEOUT

    def stats(self, replica):
        """One sample of a replica's counters: CPU time (ns), memory in use (bytes)."""
        sample = self.call(replica["server"], lambda c: c.api.stats(replica["id"], stream=False, one_shot=True))
        memory = sample.get("memory_stats", {})
        cache = memory.get("stats", {}).get("total_inactive_file", 0)
        return {"cpu_ns": sample.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0),
                "memory_bytes": max(0, memory.get("usage", 0) - cache), "time": time.time()}

    def close(self):
        for forward in self.forwards.values():
            forward.close()
        self.pool.shutdown(wait=False)

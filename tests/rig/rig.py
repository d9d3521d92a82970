"""The test rig: N servers on one machine, each a network namespace with its own address,
Docker Engine, sshd and cAdvisor stand-in; and the control plane (HAProxy, Prometheus,
Alertmanager, alertscale) on the host. Used by the end-to-end tests and `make demo`.

    python3 tests/rig/rig.py up [--servers 4]     servers + control plane with tests/rig/config.yaml
    python3 tests/rig/rig.py load [--seconds 120] CPU load through HAProxy on the Ollama stand-in
    python3 tests/rig/rig.py down                 stop every process it started, remove the namespaces
"""
import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import requests
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUN = Path("/run/alertscale-rig")  # sockets, pid files, logs
DATA = Path("/var/lib/alertscale-rig")  # engines' data, keys, Prometheus data
SUBNET = "10.99.0"
IMAGE = "alertscale-demo:latest"
BIN = Path(sys.executable).parent


def sh(*argv, check=True, **kw):
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {done.returncode}: {done.stderr.strip()}")
    return done


def in_ns(server, *argv):
    # nsenter --net, not `ip netns exec`: the latter remounts /sys and dockerd loses its cgroups.
    return ["nsenter", f"--net=/var/run/netns/{server}", *map(str, argv)]


def spawn(name, argv, env=None):
    """Start a long-running process in its own session; its pid goes to RUN/pids/<name>."""
    (RUN / "pids").mkdir(parents=True, exist_ok=True)
    (RUN / "logs").mkdir(parents=True, exist_ok=True)
    log = open(RUN / "logs" / f"{name}.log", "ab")
    proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, **(env or {})})
    (RUN / "pids" / name).write_text(str(proc.pid))
    return proc


def stop(name, timeout=10):
    """Stop a process started by spawn(), and its children, by its pid (= its process group): TERM, then KILL."""
    pid_file = RUN / "pids" / name
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:  # not our child: poll for it
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def address(i):
    return f"{SUBNET}.{i}"


def docker_sock(name):
    return RUN / name / "docker.sock"


def docker(name, *argv, **kw):
    return sh("docker", "-H", f"unix://{docker_sock(name)}", *argv, **kw)


def demo_image_tar():
    """A scratch image: busybox httpd serving /api/tags (health), /cgi-bin/whoami and /cgi-bin/burn (CPU)."""
    files = {
        "www/api/tags": '{"models":[]}\n',
        "www/health": "ok\n",
        "www/index.html": "alertscale demo\n",
        "www/cgi-bin/whoami": "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n/bin/busybox hostname\n",
        # Burns CPU for each request: QUERY_STRING is the number of loop turns (default 20000).
        "www/cgi-bin/burn": "#!/bin/sh\nn=${QUERY_STRING:-20000}; i=0\n"
                            "while [ $i -lt $n ]; do i=$((i+1)); done\n"
                            "printf 'Content-Type: text/plain\\r\\n\\r\\n'\n/bin/busybox hostname\n",
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", "bin/busybox")
        for link in ("sh", "hostname"):
            info = tarfile.TarInfo(f"bin/{link}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        for d in ("tmp", "www/cgi-bin"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o755 if "cgi-bin" in path else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def start_dockerd(i):
    name = f"srv{i}"
    spawn(f"{name}-dockerd", in_ns(name, "dockerd", "--host", f"unix://{docker_sock(name)}",
                                   "--data-root", DATA / name / "docker", "--exec-root", RUN / name / "exec",
                                   "--pidfile", RUN / name / "docker.pid", "--cgroup-parent", name,
                                   "--bip", f"172.31.{i}.1/24"))


def restart_dockerd(i):
    """Start a server's engine again after a test killed it; wait until it answers."""
    name = f"srv{i}"
    stop(f"{name}-dockerd")
    (RUN / name / "docker.pid").unlink(missing_ok=True)
    start_dockerd(i)
    wait_for(f"{name} dockerd", lambda: docker(name, "info", check=False).returncode == 0)


def server_up(i):
    name, addr = f"srv{i}", address(i)
    run, data = RUN / name, DATA / name
    run.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    sh("ip", "netns", "add", name)
    sh("ip", "link", "add", f"veth-{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
    sh("ip", "link", "set", f"veth-{name}", "master", "rig0")
    sh("ip", "link", "set", f"veth-{name}", "up")
    sh(*in_ns(name, "sh", "-c", f"ip addr add {addr}/24 dev eth0 && ip link set eth0 up && ip link set lo up"))
    start_dockerd(i)
    host_key = data / "ssh_host_ed25519_key"
    if not host_key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key)
    (data / "sshd_config").write_text(
        f"ListenAddress {addr}:22\nHostKey {host_key}\nPasswordAuthentication no\n"
        f"PermitRootLogin prohibit-password\nUsePAM no\nPidFile {run}/sshd.pid\n"
        f"AuthorizedKeysFile {DATA}/authorized_keys\nStreamLocalBindUnlink yes\n"
        f"SetEnv DOCKER_HOST=unix://{docker_sock(name)}\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    spawn(f"{name}-sshd", in_ns(name, "/usr/sbin/sshd", "-D", "-e", "-f", data / "sshd_config"))
    spawn(f"{name}-cadvisor", in_ns(name, sys.executable, HERE / "cadvisor_standin.py",
                                    "--listen", f"{addr}:9338", "--docker", docker_sock(name)))


def servers_up(n):
    down()
    for d in (RUN, DATA):
        d.mkdir(parents=True, exist_ok=True)
    key = DATA / "id_ed25519"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
    shutil.copyfile(f"{key}.pub", DATA / "authorized_keys")
    sh("ip", "link", "add", "rig0", "type", "bridge")
    sh("ip", "addr", "add", f"{SUBNET}.254/24", "dev", "rig0")
    sh("ip", "link", "set", "rig0", "up")
    for i in range(1, n + 1):
        server_up(i)
    tar = demo_image_tar()
    for i in range(1, n + 1):
        name = f"srv{i}"
        wait_for(f"{name} dockerd", lambda: docker(name, "info", check=False).returncode == 0)
        subprocess.run(["docker", "-H", f"unix://{docker_sock(name)}", "import",
                        "--change", 'ENTRYPOINT ["/bin/busybox"]',
                        "--change", 'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]', "-", IMAGE],
                       input=tar, check=True, capture_output=True)
        wait_for(f"{name} sshd", lambda: sh("ssh", "-i", key, "-o", "BatchMode=yes", "-o",
                                            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                            f"root@{address(i)}", "true", check=False).returncode == 0)


def config_for(n, **overrides):
    """The rig's config.yaml as a dict: tests/rig/config.yaml with its servers, then overrides."""
    config = yaml.safe_load((HERE / "config.yaml").read_text())
    config["servers"] = [
        {"name": f"srv{i}", "host": address(i), "ssh_user": "root", "ssh_key": str(DATA / "id_ed25519"),
         "max_containers": 12, "role": "control" if i == 1 else "worker",
         "docker_host": f"unix://{docker_sock('srv1')}" if i == 1 else
         f"ssh://root@{address(i)}{docker_sock(f'srv{i}')}"} for i in range(1, n + 1)]
    for dotted, value in overrides.items():
        node, *path = config, *dotted.split(".")
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return config


def control_up(config, name="rig", pipeline=True):
    """Render config, start HAProxy, alertscale and (with pipeline) Prometheus and Alertmanager."""
    out = RUN / name
    out.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config["load_balancer"] = {**config.get("load_balancer", {}), "runtime_socket": str(RUN / "haproxy.sock"),
                               "config_path": str(out / "haproxy.cfg")}
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    sh(BIN / "alertscale", "render", "-c", config_path, "-o", out)
    token = sh(BIN / "alertscale", "token", "-c", config_path).stdout.strip()
    spawn("haproxy", ["haproxy", "-db", "-f", out / "haproxy.cfg"])
    spawn("alertscale", [BIN / "alertscale", "serve", "-c", config_path])
    wait_for("alertscale", lambda: requests.get("http://127.0.0.1:8000/", timeout=1).ok)
    if pipeline:
        pipeline_up(out)
    return {"config": config_path, "out": out, "token": token}


def pipeline_up(out):
    # GOGC=40, as the Ansible role sets it: a smaller heap for a few thousand series (PRD: 150 MB in all).
    go = {"GOGC": "40"}
    spawn("alertmanager", ["prometheus-alertmanager", f"--config.file={out / 'alertmanager.yml'}",
                           f"--storage.path={DATA / 'alertmanager'}", "--web.listen-address=127.0.0.1:9093",
                           "--cluster.listen-address="], env=go)
    spawn("prometheus", ["prometheus", f"--config.file={out / 'prometheus.yml'}",
                         f"--storage.tsdb.path={DATA / 'prometheus'}", "--web.listen-address=127.0.0.1:9090",
                         "--storage.tsdb.retention.time=7d"], env=go)
    wait_for("prometheus", lambda: requests.get("http://127.0.0.1:9090/-/ready", timeout=1).ok)
    wait_for("alertmanager", lambda: requests.get("http://127.0.0.1:9093/-/ready", timeout=1).ok)


def control_down():
    """Stop the control plane and remove every replica, for a fresh start."""
    for name in ("alertscale", "prometheus", "alertmanager", "haproxy"):
        stop(name)
    for pid_file in sorted((RUN / "pids").glob("*-dockerd")) if (RUN / "pids").exists() else []:
        server = pid_file.name[:-len("-dockerd")]
        ids = docker(server, "ps", "-aq", "--filter", "label=alertscale.service", check=False).stdout.split()
        if ids:
            docker(server, "rm", "-f", *ids, check=False)
    for d in ("prometheus", "alertmanager"):
        shutil.rmtree(DATA / d, ignore_errors=True)
    shutil.rmtree(Path(config_for(1)["autoscaler"]["state_dir"]), ignore_errors=True)


def down():
    """Stop everything the rig started (by pid) and remove its namespaces and bridge."""
    control_down()
    pids = RUN / "pids"
    names = sorted(p.name for p in pids.iterdir()) if pids.exists() else []
    for name in names:
        if name.endswith("-dockerd"):
            server = name[:-len("-dockerd")]
            ids = docker(server, "ps", "-aq", check=False).stdout.split()
            if ids:
                docker(server, "rm", "-f", *ids, check=False)
    for name in names:
        stop(name, timeout=20)
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        if line.startswith("srv"):
            server = line.split()[0]
            # Anything still inside a rig namespace is the rig's own (an ssh session, say).
            for pid in sh("ip", "netns", "pids", server, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", server, check=False)
    # A namespace can outlive `ip netns del` for a while; its veth end here goes with the pair.
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith("veth-srv"):
            sh("ip", "link", "del", name, check=False)
    sh("ip", "link", "del", "rig0", check=False)


class Load:
    """CPU load through HAProxy's frontend, in background threads, bounded in time.

    Each client loops on /cgi-bin/burn. A paced client sleeps as long as its last
    request took: with requests long enough to be held to the replica's CPU limit
    (turns=200000 is about a second at 0.25 cores), that holds the replica near half
    of its limit whatever the speed of the machine."""

    def __init__(self, clients=4, turns=20000, paced=False, port=11434, seconds=900):
        self.url = f"http://127.0.0.1:{port}/cgi-bin/burn?{turns}"
        self.paced, self.stop_at = paced, time.monotonic() + seconds
        self.done = threading.Event()
        self.counts = {"ok": 0, "failed": 0}
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _loop(self):
        with requests.Session() as s:
            while not self.done.is_set() and time.monotonic() < self.stop_at:
                started = time.monotonic()
                try:
                    ok = s.get(self.url, timeout=30).ok
                except requests.RequestException:
                    ok = False
                self.counts["ok" if ok else "failed"] += 1
                if self.paced:
                    self.done.wait(time.monotonic() - started)

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join()
        return self.counts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "load"])
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    if args.command == "down":
        down()
        print("rig: stopped and removed")
    elif args.command == "load":
        print(f"rig: {args.clients} clients on :11434/cgi-bin/burn for {args.seconds}s; "
              "watch http://127.0.0.1:8000/events ...")
        load = Load(clients=args.clients, seconds=args.seconds)
        for t in load.threads:
            t.join()
        print("rig: requests", load.stop())
    else:
        servers_up(args.servers)
        control = control_up(config_for(args.servers))
        print(f"rig: {args.servers} servers at {address(1)}..{address(args.servers)}, control plane on this host\n"
              "  ollama (stand-in)  http://127.0.0.1:11434/api/tags\n"
              "  web_app            http://127.0.0.1:8080/\n"
              "  HAProxy stats      http://127.0.0.1:8404/\n"
              "  alertscale API     http://127.0.0.1:8000/status   (token: alertscale token -c "
              f"{control['config']})\n"
              "  Prometheus         http://127.0.0.1:9090/alerts\n"
              "  Alertmanager       http://127.0.0.1:9093/\n"
              f"  logs               {RUN / 'logs'}")


if __name__ == "__main__":
    main()

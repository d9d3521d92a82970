"""Test stand-in for cAdvisor, which cannot be installed on the test machines. Never shipped.

Runs inside one rig server's network namespace and serves, on /metrics, the real
cgroup counters of the containers of that server's Docker engine under cAdvisor's
own metric names and labels (container_cpu_usage_seconds_total,
container_spec_cpu_quota, container_spec_cpu_period,
container_memory_working_set_bytes, container_label_<label>), so that the rules
in rules/ are exercised as they are against cAdvisor in production.

    python3 cadvisor_standin.py --listen 10.99.0.1:9338 --docker /run/srv1/docker.sock
"""
import argparse
import http.client
import json
import re
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path)


def docker_get(sock, path):
    conn = UnixHTTPConnection(sock)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return json.loads(body)


def cgroup_dirs(pid):
    """{controller: /sys/fs/cgroup/<controller>/<path>} of a process (cgroup v1)."""
    dirs = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(","):
                # the mount is named after the controllers mounted together ("cpu,cpuacct" or "cpu")
                dirs[c] = f"/sys/fs/cgroup/{controllers}{path}"
    return dirs


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def label_name(key):
    return "container_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics(sock):
    lines = ["# TYPE container_cpu_usage_seconds_total counter",
             "# TYPE container_spec_cpu_quota gauge", "# TYPE container_spec_cpu_period gauge",
             "# TYPE container_memory_working_set_bytes gauge"]
    for c in docker_get(sock, "/containers/json"):
        info = docker_get(sock, f"/containers/{c['Id']}/json")
        pid = info["State"]["Pid"]
        if not pid:
            continue
        try:
            dirs = cgroup_dirs(pid)
        except OSError:
            continue
        labels = {"id": f"/docker/{c['Id']}", "name": c["Names"][0].lstrip("/"), "image": c["Image"]}
        labels.update({label_name(k): v for k, v in (c.get("Labels") or {}).items()})
        text = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))
        cpu = read(f"{dirs.get('cpuacct', '')}/cpuacct.usage")
        if cpu is None:
            continue
        lines.append(f"container_cpu_usage_seconds_total{{{text}}} {int(cpu) / 1e9}")
        quota = int(read(f"{dirs.get('cpu', '')}/cpu.cfs_quota_us", "-1"))
        period = int(read(f"{dirs.get('cpu', '')}/cpu.cfs_period_us", "100000"))
        lines.append(f"container_spec_cpu_period{{{text}}} {period}")
        if quota > 0:  # cAdvisor, too, reports a quota only when one is set
            lines.append(f"container_spec_cpu_quota{{{text}}} {quota}")
        mem = dirs.get("memory", "")
        usage = int(read(f"{mem}/memory.usage_in_bytes", "0"))
        stat = dict(line.split() for line in read(f"{mem}/memory.stat", "").splitlines() if line)
        working_set = max(0, usage - int(stat.get("total_inactive_file", 0)))
        lines.append(f"container_memory_working_set_bytes{{{text}}} {working_set}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--docker", required=True, help="the engine's unix socket")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                body, code = metrics(args.docker).encode(), 200
            except Exception as e:  # the engine may be gone: answer like a failing scrape
                body, code = f"error: {e}\n".encode(), 500
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    host, port = args.listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()

"""HAProxy's runtime API (the admin stats socket): list, add, drain and delete backend servers."""
import csv
import socket
import time


class HAProxyError(Exception):
    """HAProxy refused a command or cannot be reached."""


class HAProxy:
    def __init__(self, socket_path, timeout=3.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, line):
        """Send one command, return HAProxy's answer (one connection per command)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as e:
            raise HAProxyError(f"HAProxy runtime socket {self.socket_path}: {e}") from e
        return b"".join(chunks).decode()

    def _checked(self, line):
        answer = self.command(line).strip()
        # Success is an empty answer or a sentence; failures name themselves.
        if any(word in answer.lower() for word in ("no such", "unknown", "error", "not found",
                                                     "require", "invalid", "cannot", "refused")):
            raise HAProxyError(f"HAProxy refused '{line}': {answer}")
        return answer

    def servers(self, backend):
        """{server name: {addr, port, status, sessions}} of one backend."""
        state, answer = {}, self.command(f"show servers state {backend}")
        for line in answer.splitlines():
            fields = line.split()
            # columns: be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port
            if len(fields) > 18 and fields[1] == backend:
                state[fields[3]] = {"addr": fields[4], "port": int(fields[18])}
        if not state and "No such backend" in answer:
            raise HAProxyError(f"HAProxy has no backend {backend!r}: is haproxy.cfg rendered from this config?")
        for row in csv.DictReader(self.command("show stat").lstrip("# ").splitlines()):
            if row["pxname"] == backend and row["svname"] in state:
                state[row["svname"]].update(status=row["status"], sessions=int(row["scur"] or 0))
        return state

    def add(self, backend, name, addr, port, check_interval):
        """Add a server with its health check on, in rotation."""
        self._checked(f"add server {backend}/{name} {addr}:{port} check inter {int(check_interval * 1000)}ms "
                      f"fall 2 rise 2")
        self._checked(f"enable health {backend}/{name}")
        self._checked(f"enable server {backend}/{name}")

    def drain(self, backend, name, timeout):
        """Stop new sessions to a server; wait until it has none (at most timeout s). True if it emptied."""
        self._checked(f"set server {backend}/{name} state drain")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.servers(backend).get(name, {}).get("sessions", 0) == 0:
                return True
            time.sleep(0.2)
        return False

    def delete(self, backend, name):
        """Take a server out for good: maint, cut what is left, delete (retried while idle connections close)."""
        self._checked(f"set server {backend}/{name} state maint")
        self.command(f"shutdown sessions server {backend}/{name}")
        for _ in range(25):
            answer = self.command(f"del server {backend}/{name}").strip()
            if "deleted" in answer.lower() or "no such server" in answer.lower():
                return
            time.sleep(0.2)
        raise HAProxyError(f"HAProxy would not delete {backend}/{name}: {answer}")

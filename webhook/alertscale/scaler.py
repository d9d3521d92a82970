"""Scaling: pure decisions (hours, cooldown, bounds, placement) and the actions on engines and HAProxy."""
import logging
import threading
import time
from collections import defaultdict
from datetime import datetime
from zoneinfo import ZoneInfo

import requests

from . import render
from .engines import EngineUnreachable
from .haproxy import HAProxyError

log = logging.getLogger(__name__)
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
UNHEALTHY_PASSES = 3  # reconcile passes a running replica may fail HAProxy's check before it is replaced


class ActionFailed(Exception):
    """An action started but could not finish; what was started has been undone."""


# --- decisions: pure functions of their arguments ---------------------------------

def in_business_hours(now, hours):
    """Is unix time `now` inside the configured window, in its time zone (DST-correct)?"""
    local = datetime.fromtimestamp(now, ZoneInfo(hours["timezone"]))
    minute = local.hour * 60 + local.minute
    start, end = (int(h) * 60 + int(m) for h, m in (t.split(":") for t in (hours["start"], hours["end"])))
    return DAYS[local.weekday()] in hours["days"] and start <= minute < end


def refusal(direction, svc, serving, last_action, now, manual, hours):
    """Why a step must not be taken now, or None: business hours, cooldown, bounds, in that order."""
    if not manual and svc["business_hours_only"] and not in_business_hours(now, hours):
        return f"outside business hours ({hours['start']}-{hours['end']} {hours['timezone']})"
    if not manual and last_action is not None and now - last_action < svc["cooldown_period"]:
        return f"cooldown: last action {now - last_action:.0f}s ago, cooldown_period is {svc['cooldown_period']}s"
    if direction == "up" and serving >= svc["max_replicas"]:
        return f"at max_replicas ({svc['max_replicas']})"
    if direction == "down" and serving <= svc["min_replicas"]:
        return f"at min_replicas ({svc['min_replicas']})"
    return None


def place(svc, servers, service_counts, container_counts, reachable):
    """The server for a new replica: reachable, with room; fewest of this service, then fewest containers."""
    room = [s["name"] for s in servers if reachable.get(s["name"])
            and service_counts.get(s["name"], 0) < svc["max_per_server"]
            and container_counts.get(s["name"], 0) < s["max_containers"]]
    return min(room, key=lambda n: (service_counts.get(n, 0), container_counts.get(n, 0), n), default=None)


def pick_victim(replicas, prefer_servers=()):
    """The replica to remove: on a preferred server if any, else on the server with most; newest first."""
    per_server = defaultdict(int)
    for r in replicas:
        per_server[r["server"]] += 1
    return max(replicas, key=lambda r: (r["server"] in prefer_servers, per_server[r["server"]], r["created"]),
               default=None)


# --- actions ------------------------------------------------------------------------

class Scaler:
    def __init__(self, config, engines, haproxy, state, metrics, clock=time.time):
        self.config, self.engines, self.haproxy, self.state, self.metrics = config, engines, haproxy, state, metrics
        self.clock = clock
        self.locks = defaultdict(threading.Lock)
        self.view = {}  # service -> last observation, for /services and /metrics
        self.returned = set()  # servers whose engine came back: their replicas go first when surplus
        self.unhealthy = defaultdict(int)  # haproxy name -> reconcile passes seen DOWN in HAProxy

    # observation

    def observe(self, service, listing=None):
        """What exists for a service: serving replicas, the dead, HAProxy's servers, counts per server."""
        listing = self.engines.list_all() if listing is None else listing
        try:
            in_haproxy = self.haproxy.servers(service)
        except HAProxyError as e:
            log.warning("%s: %s", service, e)
            in_haproxy = None
        running, dead, containers = [], [], defaultdict(int)
        for server, replicas in listing.items():
            for r in replicas or []:
                containers[server] += r["status"] == "running"
                if r["service"] == service:
                    (running if r["status"] == "running" else dead).append(r)
        # Replicas on a server whose engine is lost still serve while HAProxy sees them up.
        vouched = [{"server": name.rsplit("-", 1)[0], "haproxy_name": name, "addr": s["addr"], "port": s["port"],
                    "created": "", "status": "unreachable engine, up in HAProxy"}
                   for name, s in (in_haproxy or {}).items()
                   if listing.get(name.rsplit("-", 1)[0], []) is None and s.get("status", "").startswith("UP")]
        serving = running + vouched
        per_server = defaultdict(int)
        for r in serving:
            per_server[r["server"]] += 1
        reachable = {name: replicas is not None for name, replicas in listing.items()}
        view = {"running": running, "dead": dead, "serving": serving, "haproxy": in_haproxy,
                "per_server": dict(per_server), "containers": dict(containers), "reachable": reachable}
        self.view[service] = view
        return view

    def desired(self, service):
        svc = self.config["services"][service]
        wanted = self.state.desired(service)
        return min(max(svc["min_replicas"] if wanted is None else wanted, svc["min_replicas"]), svc["max_replicas"])

    # the three actions

    def scale(self, service, direction, source, manual=False, cause=None):
        """One step up or down; returns the event (done, refused or failed)."""
        svc = self.config["services"][service]
        with self.locks[service]:
            started, now = time.monotonic(), self.clock()
            view = self.observe(service)
            before = len(view["serving"])
            event = {"time": now, "service": service, "action": f"scale_{direction}", "source": source,
                     "replicas_before": before, "replicas_after": before}
            reason = refusal(direction, svc, before, self.state.last_action(service), now, manual,
                             self.config["autoscaler"]["business_hours"])
            if reason is None and direction == "up":
                server = place(svc, self.config["servers"], view["per_server"], view["containers"], view["reachable"])
                reason = None if server else "no capacity: no reachable server has room (max_per_server/max_containers)"
            if reason is None and direction == "down":
                victim = pick_victim(view["running"], self.returned)
                reason = None if victim else "no replica on a reachable engine to remove"
            if reason:
                return self._finish(event, "refused", reason, started)
            self.state.start_cooldown(service, now)
            try:
                if direction == "up":
                    replica = self._start(service, svc, server)
                else:
                    replica = victim
                    self._stop(service, svc, victim)
            except (ActionFailed, EngineUnreachable, HAProxyError) as e:
                return self._finish(event, "failed", str(e), started)
            self.state.set_desired(service, before + (1 if direction == "up" else -1))
            event.update(replicas_after=before + (1 if direction == "up" else -1), server=replica["server"],
                         container=replica.get("name"))
            self._write_haproxy_config()
            return self._finish(event, "done", cause or f"{source} request", started)

    def replace_all(self, service, action):
        """Restart or rolling update: replace every replica, one at a time, new before old."""
        svc = self.config["services"][service]
        with self.locks[service]:
            started = time.monotonic()
            view = self.observe(service)
            event = {"time": self.clock(), "service": service, "action": action, "source": "manual",
                     "replicas_before": len(view["serving"])}
            replaced = []
            try:
                for old in sorted(view["running"], key=lambda r: r["created"]):
                    self._start(service, svc, old["server"])
                    self._stop(service, svc, old)
                    replaced.append(old["name"])
            except (ActionFailed, EngineUnreachable, HAProxyError) as e:
                event["replicas_after"] = len(self.observe(service)["serving"])
                return self._finish(event, "failed", f"after replacing {len(replaced)}: {e}", started)
            self._write_haproxy_config()
            event.update(replicas_after=len(self.observe(service)["serving"]), detail={"replaced": replaced})
            return self._finish(event, "done", f"replaced {len(replaced)} replica(s), one at a time", started)

    def reconcile(self, service, listing=None):
        """Make the service match its desired count, and HAProxy match the running replicas."""
        svc = self.config["services"][service]
        if not self.locks[service].acquire(blocking=False):
            return  # an action is under way; the next pass will look again
        try:
            view = self.observe(service, listing)
            changed = False
            for r in list(view["running"]):  # running, but failing its health check: replace it
                name = r["haproxy_name"]
                down = (view["haproxy"] or {}).get(name, {}).get("status") == "DOWN"
                self.unhealthy[name] = self.unhealthy[name] + 1 if down else 0
                if self.unhealthy[name] >= UNHEALTHY_PASSES:
                    del self.unhealthy[name]
                    r["status"] = f"DOWN in HAProxy for {UNHEALTHY_PASSES} reconcile passes"
                    view["running"].remove(r)
                    view["serving"].remove(r)
                    view["per_server"][r["server"]] -= 1
                    view["dead"].append(r)
            for r in view["dead"]:
                self._log_event(service, "remove_dead", f"container {r['status']}", r)
                if r["haproxy_name"] in (view["haproxy"] or {}):  # dead: nothing left to drain
                    self.haproxy.delete(service, r["haproxy_name"])
                self.engines.remove(r, 0)
                changed = True
            if view["haproxy"] is not None:
                changed |= self._sync_haproxy(service, svc, view)
            target = self.desired(service)
            if self.state.desired(service) != target:
                self.state.set_desired(service, target)
            missing = target - len(view["serving"])
            for _ in range(missing):
                server = place(svc, self.config["servers"], view["per_server"], view["containers"], view["reachable"])
                if not server:
                    self._log_event(service, "replace", "no capacity for a missing replica", {}, "refused")
                    break
                r = self._start(service, svc, server)
                view["per_server"][server] = view["per_server"].get(server, 0) + 1
                view["containers"][server] = view["containers"].get(server, 0) + 1
                self._log_event(service, "replace", f"{len(view['serving'])} serving, {target} desired", r)
                changed = True
            for _ in range(-missing):
                victim = pick_victim(view["running"], self.returned)
                if not victim:
                    break
                view["running"].remove(victim)
                self._stop(service, svc, victim)
                self._log_event(service, "remove_surplus", f"{len(view['serving'])} serving, {target} desired",
                                victim)
                changed = True
            if changed:
                self._write_haproxy_config()
                self.observe(service)
        except (ActionFailed, EngineUnreachable, HAProxyError) as e:
            self._log_event(service, "reconcile", str(e), {}, "failed")
        finally:
            self.locks[service].release()

    def reconcile_all(self):
        listing = self.engines.list_all()
        for name, replicas in listing.items():
            if replicas is None:
                self.returned.add(name)
        for service in list(self.config["services"]):
            self.reconcile(service, listing)
        # A server whose engine came back is preferred for removal during the first pass after its return.
        self.returned = {n for n in self.returned if listing.get(n) is None}

    # building blocks

    def _start(self, service, svc, server):
        """Start a replica, wait for its health check, put it in HAProxy; undo on failure."""
        replica = self.engines.start(server, service, svc)
        url = f"http://{replica['addr']}:{replica['port']}{svc['health_check']['path']}"
        deadline = time.monotonic() + svc["start_timeout"]
        while True:
            try:
                if requests.get(url, timeout=svc["health_check"]["timeout"]).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.engines.remove(replica, 0)
                raise ActionFailed(f"{replica['name']} on {server} did not pass {url} "
                                   f"within start_timeout ({svc['start_timeout']}s); removed it")
            time.sleep(0.1)
        try:
            self.haproxy.add(service, replica["haproxy_name"], replica["addr"], replica["port"],
                             svc["health_check"]["interval"])
        except HAProxyError:
            self.engines.remove(replica, 0)
            raise
        return replica

    def _stop(self, service, svc, replica):
        """Drain a replica in HAProxy (bounded), delete it there, then stop its container gracefully."""
        if self.haproxy.servers(service).get(replica["haproxy_name"]):
            if not self.haproxy.drain(service, replica["haproxy_name"], svc["drain_timeout"]):
                log.warning("%s: %s still had sessions after drain_timeout (%ss)", service,
                            replica["haproxy_name"], svc["drain_timeout"])
            self.haproxy.delete(service, replica["haproxy_name"])
        self.engines.remove(replica, svc["stop_grace"])

    def _sync_haproxy(self, service, svc, view):
        """Add running replicas HAProxy lacks; delete HAProxy servers whose container is gone."""
        changed = False
        known = {r["haproxy_name"] for r in view["running"]}
        for r in view["running"]:
            if r["haproxy_name"] not in view["haproxy"] and r["port"]:
                self.haproxy.add(service, r["haproxy_name"], r["addr"], r["port"], svc["health_check"]["interval"])
                self._log_event(service, "haproxy_add", "running replica missing from HAProxy", r)
                changed = True
        for name in view["haproxy"]:
            server = name.rsplit("-", 1)[0]
            if view["reachable"].get(server) and name not in known:
                self.haproxy.delete(service, name)
                self._log_event(service, "haproxy_delete", "no running container behind it",
                                {"server": server, "name": name})
                changed = True
        return changed

    def _write_haproxy_config(self):
        """Write the current servers into haproxy.cfg, so a HAProxy restart keeps them."""
        path = self.config["load_balancer"]["config_path"]
        if not path:
            return
        try:
            servers = {s: [{"name": n, **v} for n, v in sorted(self.haproxy.servers(s).items())]
                       for s in self.config["services"]}
        except HAProxyError as e:
            log.warning("haproxy.cfg not written: %s", e)
            return
        render.write_atomic(path, render.render_haproxy(self.config, servers))

    def _log_event(self, service, action, reason, replica, result="done"):
        self._finish({"time": self.clock(), "service": service, "action": action, "source": "reconcile",
                      "server": replica.get("server"), "container": replica.get("name")}, result, reason, None)

    def _finish(self, event, result, reason, started):
        event.update(result=result, reason=reason)
        self.state.record(event)
        level = logging.ERROR if result == "failed" else logging.INFO
        log.log(level, "%s %s (%s): %s: %s", event["service"], event["action"], event["source"], result, reason)
        if started is not None:
            self.metrics.action(event, time.monotonic() - started)
        return event

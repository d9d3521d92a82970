"""alertscale's own Prometheus metrics (GET /metrics); the rules read desired and min replicas from here."""
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.actions = Counter("alertscale_scale_actions_total", "Scale actions by service, direction and result",
                               ["service", "direction", "result"], registry=self.registry)
        self.duration = Histogram("alertscale_action_duration_seconds", "Time an action took, decision to done",
                                  ["service", "action"], registry=self.registry,
                                  buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self.scaler = None
        self.registry.register(self)

    def action(self, event, seconds):
        if event["action"].startswith("scale_"):
            self.actions.labels(event["service"], event["action"][6:], event["result"]).inc()
        if event["result"] == "done":
            self.duration.labels(event["service"], event["action"]).observe(seconds)

    def collect(self):
        """Gauges read from the scaler's last observation at scrape time."""
        if self.scaler is None:
            return
        s = self.scaler
        families = {
            "replicas": GaugeMetricFamily("alertscale_service_replicas", "Serving replicas per service and server",
                                          labels=["service", "server"]),
            "desired": GaugeMetricFamily("alertscale_service_desired_replicas", "Desired replicas",
                                         labels=["service"]),
            "min": GaugeMetricFamily("alertscale_service_min_replicas", "min_replicas", labels=["service"]),
            "max": GaugeMetricFamily("alertscale_service_max_replicas", "max_replicas", labels=["service"]),
            "up": GaugeMetricFamily("alertscale_service_scale_up_threshold_percent", "scale_up_threshold",
                                    labels=["service"]),
            "down": GaugeMetricFamily("alertscale_service_scale_down_threshold_percent", "scale_down_threshold",
                                      labels=["service"]),
            "last": GaugeMetricFamily("alertscale_service_last_action_timestamp_seconds",
                                      "Time of the last scale action (the cooldown clock)", labels=["service"]),
            "engine": GaugeMetricFamily("alertscale_engine_up", "1 if the server's Docker engine answers",
                                        labels=["server"]),
        }
        for name, svc in s.config["services"].items():
            view = s.view.get(name, {})
            for server in s.config["servers"]:
                families["replicas"].add_metric([name, server["name"]],
                                                view.get("per_server", {}).get(server["name"], 0))
            families["desired"].add_metric([name], s.desired(name))
            families["min"].add_metric([name], svc["min_replicas"])
            families["max"].add_metric([name], svc["max_replicas"])
            families["up"].add_metric([name], svc["scale_up_threshold"])
            families["down"].add_metric([name], svc["scale_down_threshold"])
            last = s.state.last_action(name)
            if last is not None:
                families["last"].add_metric([name], last)
        for server in s.config["servers"]:
            families["engine"].add_metric([server["name"]], 1 if s.engines.reachable.get(server["name"]) else 0)
        yield from families.values()

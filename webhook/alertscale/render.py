"""Render the control server's files (Prometheus, rules, Alertmanager, HAProxy) from config.yaml."""
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2  # Flask's own template engine

from . import config as cfg

# The business-hours rule carries the zone's UTC offsets as a table of DST
# changes, because PromQL's hour() is UTC only. Re-render before the table ends.
TZ_YEARS = range(2024, 2041)
AM_WEEKDAY = {"mon": "monday", "tue": "tuesday", "wed": "wednesday", "thu": "thursday",
              "fri": "friday", "sat": "saturday", "sun": "sunday"}
WEEKDAY = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}


def template_dir():
    """Where the templates are: $ALERTSCALE_TEMPLATES, the source tree, or the installed share dir."""
    for candidate in (os.environ.get("ALERTSCALE_TEMPLATES"), Path(__file__).parents[2],
                      Path(sys.prefix) / "share" / "alertscale"):
        if candidate and (Path(candidate) / "haproxy" / "haproxy.cfg.j2").exists():
            return Path(candidate)
    raise FileNotFoundError("alertscale templates not found; set ALERTSCALE_TEMPLATES to the source tree")


def utc_offsets(zone, years=TZ_YEARS):
    """[(unix time, offset seconds)] from the start of `years`, one entry per change."""
    tz = ZoneInfo(zone)
    t = datetime(years.start, 1, 1, tzinfo=timezone.utc)
    end = datetime(years.stop, 1, 1, tzinfo=timezone.utc)
    offset = lambda when: int(when.astimezone(tz).utcoffset().total_seconds())
    changes = [(int(t.timestamp()), offset(t))]
    while t < end:
        nxt = t + timedelta(days=1)
        if offset(nxt) != changes[-1][1]:
            lo, hi = t, nxt  # bisect to the second of the change
            while hi - lo > timedelta(seconds=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if offset(mid) == changes[-1][1] else (lo, mid)
            changes.append((int(hi.timestamp()), offset(hi)))
        t = nxt
    return changes


def offset_expr(zone, years=TZ_YEARS):
    """A PromQL scalar expression: the zone's UTC offset in seconds at time()."""
    changes = utc_offsets(zone, years)
    terms = [str(changes[0][1])]
    for (_, before), (when, after) in zip(changes, changes[1:]):
        terms.append(f"{after - before} * (time() >= bool {when})")
    return " + ".join(terms)


def weekdays(days):
    """PromQL day_of_week() numbers (0 = Sunday) of the configured days."""
    return sorted(WEEKDAY[d] for d in days)


def context(config, haproxy_servers=None, tz_years=TZ_YEARS):
    hours = config["autoscaler"]["business_hours"]
    listen_port = config["autoscaler"]["listen"].rsplit(":", 1)[1]
    return {
        "config": config,
        "lb": config["load_balancer"],
        "monitoring": config["monitoring"],
        "services": config["services"],
        "servers": config["servers"],
        "webhook_url": f"http://127.0.0.1:{listen_port}/alerts",
        "alertscale_target": f"127.0.0.1:{listen_port}",
        "token_file": cfg.token_file(config),
        "tz_offset": offset_expr(hours["timezone"], tz_years),
        "tz_until": tz_years.stop,
        "open_from": cfg.minutes(hours["start"]),
        "open_until": cfg.minutes(hours["end"]),
        "open_days": weekdays(hours["days"]),
        "am_weekdays": [AM_WEEKDAY[d] for d in hours["days"]],
        "haproxy_servers": haproxy_servers or {},
    }


def environment():
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True)


def render_haproxy(config, haproxy_servers=None):
    """haproxy.cfg text; haproxy_servers {backend: [{name, addr, port}]} are written in as servers."""
    return environment().get_template("haproxy/haproxy.cfg.j2").render(context(config, haproxy_servers))


def render(config, out_dir, tz_years=TZ_YEARS):
    """Write every control-server file into out_dir; return the paths written."""
    out = Path(out_dir)
    (out / "rules").mkdir(parents=True, exist_ok=True)
    env, ctx = environment(), context(config, tz_years=tz_years)
    written = []
    for template, target in [("prometheus/prometheus.yml.j2", "prometheus.yml"),
                             ("rules/services.rules.yml.j2", "rules/services.rules.yml"),
                             ("alertmanager/alertmanager.yml.j2", "alertmanager.yml"),
                             ("haproxy/haproxy.cfg.j2", "haproxy.cfg")]:
        (out / target).write_text(env.get_template(template).render(ctx))
        written.append(out / target)
    for rules in sorted((template_dir() / "rules").glob("*.rules.yml")):
        shutil.copyfile(rules, out / "rules" / rules.name)
        written.append(out / "rules" / rules.name)
    return written


def write_atomic(path, text):
    """Replace a file in one step, so a reader never sees half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)

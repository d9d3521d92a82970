"""`alertscale render`: every file it writes passes its own tool (promtool, amtool, haproxy -c)."""
import shutil
import subprocess
import sys

import pytest
import yaml

from alertscale import config as cfg
from alertscale import render

from .conftest import EXAMPLE, ROOT

RIG_CONFIG = ROOT / "tests" / "rig" / "config.yaml"


def run(*argv):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed PEM (certificate + key) for the example's https_enabled: true."""
    pem = tmp_path_factory.mktemp("tls") / "server.pem"
    done = run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=alertscale",
               "-keyout", pem, "-out", pem)
    assert done.returncode == 0, done.stderr
    return pem


@pytest.fixture
def rendered(example_raw, write_config, tmp_path, cert):
    example_raw["load_balancer"]["cert_path"] = str(cert)
    out = tmp_path / "out"
    done = run(sys.executable, "-m", "alertscale.cli", "render", "-c", write_config(example_raw), "-o", out)
    assert done.returncode == 0, done.stderr
    return out


def test_render_writes_every_file(rendered):
    names = sorted(str(p.relative_to(rendered)) for p in rendered.rglob("*") if p.is_file())
    assert names == ["alertmanager.yml", "haproxy.cfg", "prometheus.yml", "rules/alertscale.rules.yml",
                     "rules/services.rules.yml"]


def test_prometheus_config_and_rules_pass_promtool(rendered):
    done = run("promtool", "check", "config", rendered / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rule files found" in done.stdout
    done = run("promtool", "check", "rules", *sorted((rendered / "rules").glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_scrapes_every_server_and_the_control_plane(rendered):
    prom = yaml.safe_load((rendered / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert sorted(jobs) == ["alertmanager", "alertscale", "cadvisor", "haproxy", "prometheus"]
    targets = [t for sc in jobs["cadvisor"]["static_configs"] for t in sc["targets"]]
    assert targets == [f"192.168.1.{i}:9338" for i in (10, 11, 12, 13)]
    assert jobs["haproxy"]["scheme"] == "https"  # https_enabled in the example


def test_alertmanager_config_passes_amtool(rendered):
    done = run("amtool", "check-config", rendered / "alertmanager.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("labels,receiver", [
    (["service=ollama", "scale=up", "alertname=AlertscaleServiceCPUHigh"], "alertscale"),
    (["service=web_app_a", "scale=down", "alertname=AlertscaleServiceCPULow"], "alertscale"),
    (["service=ollama", "alertname=AlertscaleCPUMetricsMissing"], "blackhole"),
    (["alertname=AlertscaleTargetDown", "job=cadvisor"], "blackhole"),
    (["service=not_in_config", "scale=up"], "blackhole"),
])
def test_alertmanager_routes(rendered, labels, receiver):
    done = run("amtool", "config", "routes", "test", f"--config.file={rendered / 'alertmanager.yml'}",
               f"--verify.receivers={receiver}", *labels)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_spaces_repeats_past_the_cooldown(rendered):
    am = yaml.safe_load((rendered / "alertmanager.yml").read_text())
    routes = {r["matchers"][0]: r for r in am["route"]["routes"]}
    assert routes['service="ollama"']["repeat_interval"] == "70s"  # cooldown_period 60 + group_interval 10
    assert routes['service="ollama"']["active_time_intervals"] == ["business_hours"]
    webhook = am["receivers"][1]["webhook_configs"][0]
    assert webhook["http_config"]["authorization"]["credentials_file"] == "/var/lib/alertscale/token"


def test_haproxy_config_passes_haproxy_check(rendered):
    done = run("haproxy", "-c", "-f", rendered / "haproxy.cfg")
    assert done.returncode == 0, done.stdout + done.stderr
    text = (rendered / "haproxy.cfg").read_text()
    for port in (11434, 8080, 8081):
        assert f"bind *:{port} ssl crt" in text
    assert "option httpchk GET /api/tags" in text and "timeout check 5s" in text


def test_haproxy_config_with_servers_written_in(example_env, cert, tmp_path):
    config = cfg.load(EXAMPLE)
    config["load_balancer"]["cert_path"] = str(cert)
    text = render.render_haproxy(config, {"ollama": [{"name": "server2-abc", "addr": "192.168.1.11", "port": 32768}]})
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    assert "server server2-abc 192.168.1.11:32768 check inter 10s" in text
    done = run("haproxy", "-c", "-f", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_render_is_deterministic(example_env, tmp_path):
    config = cfg.load(EXAMPLE)
    render.render(config, tmp_path / "a")
    render.render(config, tmp_path / "b")
    for a in sorted((tmp_path / "a").rglob("*.y*ml")) + [tmp_path / "a" / "haproxy.cfg"]:
        assert a.read_bytes() == (tmp_path / "b" / a.relative_to(tmp_path / "a")).read_bytes(), a


def test_rig_config_renders_and_passes_the_tools(tmp_path):
    data = yaml.safe_load(RIG_CONFIG.read_text())
    data["servers"] = [{"name": "srv1", "host": "10.99.0.1", "role": "control"},
                       {"name": "srv2", "host": "10.99.0.2"}, {"name": "srv3", "host": "10.99.0.3"}]
    data["load_balancer"]["runtime_socket"] = str(tmp_path / "haproxy.sock")
    render.render(cfg.parse(data), tmp_path)
    assert run("promtool", "check", "config", tmp_path / "prometheus.yml").returncode == 0
    assert run("amtool", "check-config", tmp_path / "alertmanager.yml").returncode == 0
    done = run("haproxy", "-c", "-f", tmp_path / "haproxy.cfg")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("test_file,config_file,years", [
    ("alertscale.rules.test.yml", "config.yaml", None),
    ("business-hours.test.yml", "config.yaml", None),
    # Hobart changed its offset early in 1970, so the table is rendered from 1970 for this one.
    ("business-hours.dst.test.yml", "config-dst.yaml", range(1970, 1972)),
])
def test_promtool_rule_tests(tmp_path, test_file, config_file, years):
    tests = ROOT / "rules" / "tests"
    render.render(cfg.load(tests / config_file), tmp_path, **({"tz_years": years} if years else {}))
    shutil.copyfile(tests / test_file, tmp_path / "rules" / test_file)
    done = run("promtool", "test", "rules", tmp_path / "rules" / test_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_offset_table_follows_dst():
    # 2027 in Berlin: CET (+1 h), CEST (+2 h) from 2027-03-28 01:00 UTC, CET from 2027-10-31 01:00 UTC.
    assert render.utc_offsets("Europe/Berlin", range(2027, 2028)) == [
        (1798761600, 3600), (1806195600, 7200), (1824944400, 3600)]
    assert render.offset_expr("UTC") == "0"

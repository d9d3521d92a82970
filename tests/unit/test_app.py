"""The Flask app built by create_app(): routes, auth and payload checks that reach no engine."""
import pytest

from alertscale.app import create_app


@pytest.fixture
def client(tmp_path, write_config):
    config = {"servers": [{"name": "s1", "host": "127.0.0.1", "role": "control", "docker_host": "unix:///nonexistent"}],
              "services": {"web": {"image": "x", "port": 18080}},
              "load_balancer": {"runtime_socket": str(tmp_path / "haproxy.sock")},
              "autoscaler": {"state_dir": str(tmp_path / "state")}}
    app = create_app({"ALERTSCALE_CONFIG": str(write_config(config)), "RECONCILE": False})
    return app.test_client(), app.config["ALERTSCALE_TOKEN"], tmp_path


def test_token_is_created_once_with_mode_600(client):
    _, token, tmp_path = client
    path = tmp_path / "state" / "token"
    assert path.read_text().strip() == token and oct(path.stat().st_mode & 0o777) == "0o600"


def test_routes_answer_json(client):
    c, _, _ = client
    assert c.get("/").json == {"status": "ok", "service": "alertscale"}
    assert "/services/{name}/rolling-update" in c.get("/openapi.json").json["paths"]
    assert c.get("/nope").status_code == 404 and c.get("/nope").json["status"] == "error"


def test_posts_need_the_token(client):
    c, token, _ = client
    for path in ("/alerts", "/services/web/scale/up", "/services/web/restart", "/services/web/rolling-update",
                 "/config/reload"):
        r = c.post(path)
        assert r.status_code == 401 and r.json["message"].startswith("missing or wrong bearer token"), path
    assert c.post("/alerts", headers={"Authorization": f"Bearer {token}x"}).status_code == 401


@pytest.mark.parametrize("body,message", [
    ("not json", "body must be JSON"),
    ({"alerts": []}, "'version' is a required property"),
    ({"version": "4", "alerts": [{"status": "firing", "labels": {"service": 1}}]}, "at alerts/0/labels/service"),
])
def test_bad_alert_payloads_are_400_with_what_is_wrong(client, body, message):
    c, token, _ = client
    headers = {"Authorization": f"Bearer {token}"}
    r = c.post("/alerts", data=body, headers=headers) if isinstance(body, str) else \
        c.post("/alerts", json=body, headers=headers)
    assert r.status_code == 400 and message in r.json["message"], r.json


def test_unknown_service_is_404(client):
    c, token, _ = client
    r = c.post("/services/nope/scale/up", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 404 and r.json["message"].startswith("unknown service 'nope'")


def test_injected_clock_outside_business_hours_refuses_alerts_but_not_manual_steps(tmp_path, write_config):
    from datetime import datetime, timezone
    saturday_noon = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc).timestamp()
    config = {"servers": [{"name": "s1", "host": "127.0.0.1", "role": "control", "docker_host": "unix:///nonexistent"}],
              "services": {"web": {"image": "x", "port": 18080, "business_hours_only": True}},
              "load_balancer": {"runtime_socket": str(tmp_path / "haproxy.sock")},
              "autoscaler": {"state_dir": str(tmp_path / "state")}}
    app = create_app({"ALERTSCALE_CONFIG": str(write_config(config)), "RECONCILE": False,
                      "CLOCK": lambda: saturday_noon})
    c, headers = app.test_client(), {"Authorization": f"Bearer {app.config['ALERTSCALE_TOKEN']}"}
    alert = {"version": "4", "alerts": [{"status": "firing", "labels": {"service": "web", "scale": "up"}}]}
    result = c.post("/alerts", json=alert, headers=headers).json["results"][0]
    assert result["result"] == "refused" and result["reason"].startswith("outside business hours")
    # A manual step passes the hours check; with no engine reachable it finds no capacity.
    manual = c.post("/services/web/scale/up", headers=headers).json
    assert manual["status"] == "refused" and manual["event"]["reason"].startswith("no capacity")
    assert [e["result"] for e in c.get("/events").json["events"]] == ["refused", "refused"]


def test_daily_backup_keeps_one_copy_a_day_and_drops_old_ones(tmp_path):
    import os
    import time

    from alertscale.app import daily_backup
    config = {"autoscaler": {"state_dir": str(tmp_path), "backup": {"enabled": True, "path": None,
                                                                    "retention_days": 7}}}
    daily_backup(config, "a: 1\n")
    daily_backup(config, "a: 1\n")
    copies = sorted((tmp_path / "backup").iterdir())
    assert len(copies) == 1 and copies[0].read_text() == "a: 1\n"
    week_ago = time.time() - 8 * 86400
    os.utime(copies[0], (week_ago, week_ago))
    daily_backup(config, "a: 2\n")
    copies = sorted((tmp_path / "backup").iterdir())
    assert [c.read_text() for c in copies] == ["a: 2\n"]  # a new copy; the 8-day-old one is gone

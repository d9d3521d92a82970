"""The Flask application: create_app() builds it from config.yaml (gunicorn's target)."""
import glob
import hashlib
import logging
import logging.handlers
import os
import threading
import time

from flask import Flask

from . import config as cfg
from .api import backup_config, bp, read_or_create_token
from .engines import Engines
from .haproxy import HAProxy
from .metrics import Metrics
from .scaler import Scaler
from .state import State

log = logging.getLogger(__name__)


def setup_logging(config):
    """Console, plus a file rotated at midnight and kept 7 days (PRD FR8)."""
    log_dir = os.path.join(config["autoscaler"]["state_dir"], "logs")
    os.makedirs(log_dir, exist_ok=True)
    root = logging.getLogger("alertscale")
    root.setLevel(config["autoscaler"]["log_level"])
    if not root.handlers:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        for handler in (logging.StreamHandler(),
                        logging.handlers.TimedRotatingFileHandler(os.path.join(log_dir, "alertscale.log"),
                                                                  when="midnight", backupCount=7)):
            handler.setFormatter(formatter)
            root.addHandler(handler)


def generation(config_text):
    """The config generation new replicas are labelled with: a hash of config.yaml's text."""
    return hashlib.sha256(config_text.encode()).hexdigest()[:12]


def daily_backup(config, text):
    """Keep a dated copy of the running config at least once a day (PRD 4.2)."""
    backup, directory = config["autoscaler"]["backup"], cfg.backup_dir(config)
    copies = glob.glob(os.path.join(directory, "config-*.yaml"))
    if backup["enabled"] and time.time() - max(map(os.path.getmtime, copies), default=0) > 86400:
        backup_config(text, directory, backup["retention_days"])


def create_app(test_config=None):
    """Application factory: config file (ALERTSCALE_CONFIG), then test overrides."""
    app = Flask(__name__)
    app.config.update(ALERTSCALE_CONFIG=os.environ.get("ALERTSCALE_CONFIG", "config.yaml"), RECONCILE=True)
    app.config.update(test_config or {})
    path = app.config["ALERTSCALE_CONFIG"]
    config = cfg.load(path)
    with open(path) as f:
        app.config["CONFIG_TEXT"] = f.read()
    state_dir = config["autoscaler"]["state_dir"]
    os.makedirs(state_dir, exist_ok=True)
    setup_logging(config)
    app.config.update(ALERTSCALE_TOKEN=read_or_create_token(cfg.token_file(config)), STARTED=time.time(),
                      SAMPLES={})
    metrics = Metrics()
    scaler = Scaler(config, Engines(config["servers"], os.path.join(state_dir, "run"),
                                    generation(app.config["CONFIG_TEXT"])),
                    HAProxy(config["load_balancer"]["runtime_socket"]), State(os.path.join(state_dir, "state.db")),
                    metrics, clock=app.config.get("CLOCK", time.time))
    metrics.scaler = scaler

    def apply(new, text):
        """Switch to a validated config: new engines if the servers changed, then reconcile."""
        if new["servers"] != scaler.config["servers"]:
            old, scaler.engines = scaler.engines, Engines(new["servers"], os.path.join(state_dir, "run"))
            old.close()
        scaler.engines.generation = generation(text)  # the label new replicas carry
        scaler.config = new
        scaler.haproxy = HAProxy(new["load_balancer"]["runtime_socket"])
        wake.set()

    wake = threading.Event()

    def reconcile_forever():
        while True:
            try:
                scaler.reconcile_all()
                daily_backup(scaler.config, app.config["CONFIG_TEXT"])
            except Exception:
                log.exception("reconcile pass failed")
            wake.wait(scaler.config["autoscaler"]["check_interval"])
            wake.clear()

    if app.config["RECONCILE"]:
        threading.Thread(target=reconcile_forever, name="reconcile", daemon=True).start()
    app.extensions.update(alertscale=scaler, alertscale_metrics=metrics, alertscale_apply=apply)
    app.register_blueprint(bp)
    log.info("alertscale started: %s", cfg.summary(config))
    return app

"""Shared fixtures. Tests marked `rig` need root and the rig (tests/rig/rig.py)."""
import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "config.yaml"


def pytest_configure(config):
    config.addinivalue_line("markers", "rig: needs the rig of network-namespace servers (root)")


@pytest.fixture
def example_env(monkeypatch):
    """The example's ${GRAFANA_PASSWORD}, as GitLab CI would provide it."""
    monkeypatch.setenv("GRAFANA_PASSWORD", "s3cret")


@pytest.fixture
def example_raw(example_env):
    """examples/config.yaml as a dict, to break in tests."""
    return copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict to a file and return its path."""
    def write(data, name="config.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
        return path
    return write

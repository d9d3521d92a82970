"""Packaging: `pip install .` brings the seven runtime packages and their own dependencies, nothing else."""
import json
import re
import subprocess
import sys

from .conftest import ROOT

SEVEN = {"flask", "gunicorn", "docker", "pyyaml", "requests", "jsonschema", "prometheus-client"}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_pip_install_pulls_only_the_seven_and_their_dependencies(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    installs = {canonical(i["metadata"]["name"]): i["metadata"] for i in json.loads(report.read_text())["install"]}
    assert {canonical(r.split(">")[0].split("<")[0].split(";")[0].strip())
            for r in installs["alertscale"]["requires_dist"] if "extra ==" not in r} == SEVEN
    needed, todo = set(), ["alertscale"]
    while todo:  # what alertscale needs, and what that needs (markers aside, extras left out)
        name = todo.pop()
        if name in needed or name not in installs:
            continue
        needed.add(name)
        for req in installs[name].get("requires_dist") or []:
            if "extra ==" not in req:
                todo.append(canonical(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]))
    assert set(installs) - needed == set()
    assert SEVEN <= set(installs)

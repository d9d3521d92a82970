"""The Ansible playbook parses (ansible-playbook --syntax-check). It is not converged here."""
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_playbook_syntax():
    playbook = ROOT / "ansible" / "site.yml"
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                           str(ROOT / "ansible" / "inventory.example.yml"), "--syntax-check", str(playbook)],
                          capture_output=True, text=True, cwd=ROOT / "ansible")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_role_has_the_standard_layout():
    for role in (ROOT / "ansible" / "roles").iterdir():
        for part in ("defaults/main.yml", "tasks/main.yml", "handlers/main.yml", "meta/argument_specs.yml"):
            assert (role / part).exists(), f"{role.name}: {part}"

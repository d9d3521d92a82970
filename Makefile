# The two commands of the README: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo demo-load demo-down test test-fast bench clean

install:
	sh scripts/install-deps.sh

# A rig of 4 servers on this machine with the control plane, the example services
# deployed; `make demo-load` drives CPU load so a scale-up and a scale-down happen.
demo: install
	$(PY) tests/rig/rig.py up --servers 4

demo-load:
	$(PY) tests/rig/rig.py load --seconds 180 --clients 4

demo-down:
	$(PY) tests/rig/rig.py down

# Everything: unit, real-tool checks, promtool and amtool tests, integration and
# end-to-end tests on the rig (real dockerd, sshd, HAProxy, Prometheus, Alertmanager).
test: install
	$(PY) -m pytest -ra tests

# Only the tests that need no rig (a few seconds).
test-fast: install
	$(PY) -m pytest -ra tests -m "not rig"

bench: install
	$(PY) bench/run.py

clean: demo-down
	rm -rf $(VENV) out

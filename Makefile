# Quick start (fresh Debian 12, as root):
#   make demo   install everything, bring the lab up, onboard every sample agency, sweep
#   make test   install everything and run the whole test suite (starts the lab itself)
VENV := .venv
PY := $(VENV)/bin/python
PROVISIONER := $(VENV)/bin/provisioner

.PHONY: setup demo test unit integration bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(PROVISIONER) demo

test: setup
	$(VENV)/bin/pytest -q tests $(PYTEST_ARGS)

unit: setup
	$(VENV)/bin/pytest -q tests/unit

integration: setup
	$(VENV)/bin/pytest -q tests/integration

bench: setup
	$(PY) benchmarks/run.py

clean:
	-$(PROVISIONER) lab down
	rm -rf $(VENV) build *.egg-info

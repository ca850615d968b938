# ibgw: `make demo` runs the main job on the lab, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BUILD  := build

.PHONY: demo demo-down demo-local demo-local-down test check lint types deps venv clean

LAB_INV := inventories/lab.yml

# The main job, on the lab (tests/lab/lab, as root): gw, a fresh Debian 13 host behind a
# bastion with its firewall on, is provisioned through the bastion as `admin`; three apps
# connect from app-a and app-b through the front; health, checked through the bastion.
demo: deps venv
	tests/lab/lab up
	$(BIN)/ibgw validate -i $(LAB_INV)
	$(BIN)/ibgw provision gw -i $(LAB_INV)
	$(BIN)/python scripts/demo_clients.py $(LAB_INV) gw --lab
	$(BIN)/ibgw health gw -i $(LAB_INV)
	@echo "The lab stays up: 'tests/lab/lab ssh gw' to look around, 'make demo-down' to take it down."

demo-down:
	tests/lab/lab down

# A quicker run on the disposable local host (127.0.0.1:2222, no firewall, no bastion).
demo-local: deps venv
	$(BIN)/ibgw validate -i inventories/local.yml
	tests/host/testhost.sh up
	$(BIN)/ibgw provision local -i inventories/local.yml
	$(BIN)/python scripts/demo_clients.py inventories/local.yml local
	$(BIN)/ibgw health local -i inventories/local.yml
	@echo "The host stays up: 'tests/host/testhost.sh ssh' to look around, 'make demo-local-down' to stop it."

demo-local-down:
	tests/host/testhost.sh down

# Every suite; tests/lab and tests/infra run on the lab (tests/lab/lab, as root).
test: deps venv lint types
	$(BIN)/pytest

# What needs no host: lint, format, types and the host-free suites (a minute or two).
check: venv lint types
	$(BIN)/pytest -q tests/unit tests/sim tests/gate tests/tws

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: venv
	$(BIN)/mypy ibgw_provision

deps:
	scripts/deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Taking the lab and the local host down needs root: without it, clean still removes what it can.
clean:
	-$(MAKE) demo-down
	-$(MAKE) demo-local-down
	rm -rf $(BUILD) $(VENV) dist

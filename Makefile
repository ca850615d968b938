# ibgw: `make demo` runs the main job, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BUILD  := build

.PHONY: demo demo-down test check lint types deps venv clean

# Boot the disposable local host, provision it (simulator backend), have three
# real ib_async clients use it through the front, then report its health.
demo: deps venv
	$(BIN)/ibgw validate -i inventories/local.yml
	tests/host/testhost.sh up
	$(BIN)/ibgw provision local -i inventories/local.yml
	$(BIN)/python scripts/demo_clients.py inventories/local.yml local
	$(BIN)/ibgw health local -i inventories/local.yml
	@echo "The host stays up: 'tests/host/testhost.sh ssh' to look around, 'make demo-down' to stop it."

demo-down:
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

clean: demo-down
	rm -rf $(BUILD) $(VENV) dist

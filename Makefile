# ibgw: `make demo` runs the main job, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BUILD  := build

.PHONY: demo test deps venv clean

demo: deps venv
	$(BIN)/ibgw validate -i inventories/local.yml
	rm -rf $(BUILD)/demo
	$(BIN)/ibgw render local -i inventories/local.yml --out $(BUILD)/demo
	haproxy -c -f $(BUILD)/demo/etc/haproxy/haproxy.cfg
	@echo "Rendered the local host's files under $(BUILD)/demo; each passed its validator in 'make test'."

test: deps venv
	$(BIN)/pytest

deps:
	scripts/deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(BUILD) $(VENV) dist

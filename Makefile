# lockgate — the README's commands. Each target does its own set-up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup test lint typecheck unit integration e2e demo bench clean

setup:
	@scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check .

# lockgate.* is checked as installed (scripts/layout.py links the folders into that shape)
typecheck: setup
	$(PY) scripts/layout.py typetree >/dev/null
	$(VENV)/bin/mypy -p lockgate
	$(VENV)/bin/mypy scripts setup.py tests

# All tests. pytest's exit 5 ("no tests collected") is not a pass.
test: setup lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: setup
	$(PY) -m lockgate.demo $(DEMO_ARGS)

bench: setup
	$(PY) -m lockgate.bench

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
	find runtime -name '*.so' -delete

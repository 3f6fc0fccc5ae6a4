# One-command entry points. Each works from a clean clone with nothing installed but Python 3.10+.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system test test-fast quick lint bench clean

$(STAMP): requirements-cpu.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-cpu.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the pinned CPU stack and the project

system:  ## Debian packages the slow tests need (PostgreSQL, Chromium), installed when missing
	bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint system  ## ruff, mypy, then every test (slow ones included), two test files at a time
	$(BIN)/pytest -q -n 2 --dist loadfile

test-fast: lint  ## ruff, mypy, then the tests not marked slow
	$(BIN)/pytest -q -m "not slow"

quick: $(STAMP)  ## the main job: a small real study on the offline digit scenes
	$(BIN)/ocr-study run quick

bench: $(STAMP)
	$(BIN)/python -m benchmarks.ocr_speed

clean:
	rm -rf $(VENV) .ocr-study .mypy_cache .ruff_cache .pytest_cache

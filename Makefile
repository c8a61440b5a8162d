# `make run`: the bot on the shipped model (a console on stdin when DISCORD_TOKEN is not set).
# `make test`: create .venv if missing, install the project with what the tests need, run them
# (and, as root on Debian, install the headless browser the web gallery's test opens, if missing).
# Versions are pinned by constraints.txt (`make constraints` rewrites it from a test install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --constraint constraints.txt
RUNTIME := $(VENV)/.installed-runtime
FULL := $(VENV)/.installed-full

.PHONY: run test test-fast install bench constraints clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The runtime: no TensorFlow.
$(RUNTIME): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

# Training, evaluation, benchmarks and tests: adds Keras and TensorFlow.
$(FULL): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[train,dev]'
	touch $@ $(RUNTIME)

install: $(FULL)

run: $(RUNTIME)
	$(BIN)/quill run

test: $(FULL) browser
	$(BIN)/python -m pytest -q

# Every module's quick tests (about a minute): the tests marked slow wait for make test.
test-fast: $(FULL)
	$(BIN)/python -m pytest -q -m "not slow"

# tests/test_web.py opens pages in Debian's chromium, headless; without it that test says how to get it.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Every benchmark, as JSON (story and filter read the books in ../shared/corpus). ENGINE_BASELINE is
# the last revision of 2026-11-27, the engine issue 26's speed targets are measured against.
ENGINE_BASELINE = c020ef4
bench: $(FULL)
	$(BIN)/quill bench train --json
	$(BIN)/quill bench generate --json
	$(BIN)/quill bench versus $(ENGINE_BASELINE) --json
	$(BIN)/quill bench story --json
	$(BIN)/quill bench filter --json
	$(BIN)/quill bench store --json
	$(BIN)/quill bench web --json

constraints: $(FULL)
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info

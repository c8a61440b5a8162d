# `make run`: the bot on the shipped model (a console on stdin when DISCORD_TOKEN is not set).
# `make test`: create .venv if missing, install the project with dev deps, run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/quill run

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/quill bench train --json
	$(BIN)/quill bench generate --json

clean:
	rm -rf $(VENV) build *.egg-info

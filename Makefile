# Two commands on a fresh machine (Python >= 3.11):
#   make run   creates .venv, then runs the workflow on the bundled example with the default config
#   make test  creates .venv, then runs the test suite (unit tests, snakemake --lint, a dry run,
#              the workflow on tiny models)
# Versions come from pyproject.toml alone (its dependencies and extras are pinned there).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.workflow: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[workflow]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.workflow
	$(BIN)/snakemake --cores all

test: $(VENV)/.test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .snakemake results

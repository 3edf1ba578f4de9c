# Two commands set everything up: `make repro` and `make test`. `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stages run `python`: the venv's, even when it is not activated.
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The stamp is keyed on the dependency files: a second install with nothing changed skips pip.
DEPS_HASH := $(shell cat requirements.txt pyproject.toml | $(PYTHON) -c \
	"import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])")
STAMP := $(VENV)/.installed-$(DEPS_HASH)
# The page template of `dvc plots show/diff` (.dvc/config: plots.html_template), vega inlined.
PLOTS_PAGE := .dvc/vega-offline.html

.PHONY: help install repro test test-unit lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) $(PLOTS_PAGE)  ## create .venv and install the pinned dependencies

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" || \
		{ echo "error: $(PYTHON) is older than Python 3.11; run: make PYTHON=python3.11 ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

# Made from the installed vl-convert-python, so remade after every install (and if deleted).
$(PLOTS_PAGE): $(STAMP)
	$(BIN)/python -m mnist_pipeline.plots_page $@

repro: install  ## run the whole pipeline on real MNIST (dvc repro)
	$(BIN)/dvc repro

test: lint  ## lint, then every test (unit and end-to-end; under 10 minutes)
	$(BIN)/python -m pytest

test-unit: install  ## the fast tests only: no end-to-end dvc runs
	$(BIN)/python -m pytest -m "not e2e"

lint: install  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## fix what ruff can fix, and format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install  ## measure speed ratios on this machine -> BENCHMARKS.md
	$(BIN)/python bench/benchmark.py --out BENCHMARKS.md

clean:  ## remove the virtual environment (and the plots page made from it)
	rm -rf $(VENV) $(PLOTS_PAGE)

# Atrium — every task a developer or CI runs. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install serve test test-postgres lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) scripts/bootstrap_venv.py $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Atrium with its dev tools

serve: install ## install and serve on the embedded default (SQLite, in-process cache)
	$(BIN)/atrium serve

test: install ## install and run the whole test suite (PostgreSQL/Redis when ATRIUM_TEST_* are set)
	$(BIN)/pytest

lint: install ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

format: install ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests bench scripts
	$(BIN)/ruff format src tests bench scripts

bench: install ## run the benchmarks (needs PostgreSQL: ATRIUM_BENCH_POSTGRES_URL)
	$(BIN)/python -m bench

clean: ## remove the venv and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

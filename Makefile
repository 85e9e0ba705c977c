# Atrium — every task a developer or CI runs. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install serve test test-postgres demo lint format bench docs docs-serve clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) scripts/bootstrap_venv.py $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,docs]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install Atrium with its dev and docs tools

serve: install ## install and serve on the embedded default (SQLite, in-process cache)
	$(BIN)/atrium serve

demo: install ## load sample data in every area into the running server (make serve first)
	$(BIN)/atrium demo

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

docs: install ## build the documentation site into site/ (strict: broken links fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install ## serve the documentation site with live reload on 127.0.0.1:8001
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

clean: ## remove the venv and local data
	rm -rf $(VENV) data site .pytest_cache .mypy_cache .ruff_cache

# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export BOSUN_HOME ?= $(CURDIR)/.bosun
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test test-clock-ahead lint install sample-data demo bench bench-decisions bench-cli clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

sample-data: install
	$(BIN)/bosun sample-data

# `bosun dev` writes the sample data only when it is missing (a second `make run` keeps the
# model and the ERP, and the feed continues where it stopped); `make sample-data` regenerates.
run: install
	$(BIN)/bosun dev

# Three workers on two cores: much of the suite waits on subprocesses, daemons and databases.
# `--dist loadfile` keeps a module's tests (and its module-scoped fixtures) on one worker.
PYTEST_WORKERS ?= 3
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

test: install lint
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

# The tests that depend on today's date, again with every clock a year ahead.
test-clock-ahead: install
	BOSUN_CLOCK_SHIFT_DAYS=365 $(BIN)/python -m pytest -m clock $(PYTEST_PARALLEL)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: install
	$(BIN)/bosun demo --events 2000

bench: install
	$(BIN)/python benchmarks/throughput.py

bench-decisions: install
	$(BIN)/python benchmarks/decisions.py

bench-cli: install
	$(BIN)/python benchmarks/cli.py

clean:
	rm -rf .bosun .dagster_home .pytest_cache

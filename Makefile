# medrepro — `make run` (embedded pipeline), `make test` (every test but `cluster`), `make test-fast` (the inner loop:
# no `slow`/`e2e` tests); each creates .venv with the pinned stack first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE ?= 1
CORES ?= 4
# pytest-xdist workers; the tiny DAG of the e2e tests is built once for all of them
TEST_WORKERS ?= 2

.PHONY: install run test test-fast test-cluster lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: install
	snakemake --cores $(CORES) results/table3.csv

test: install
	python -m pytest -m "not cluster" -n $(TEST_WORKERS)

test-fast: install
	python -m pytest -m "not slow and not e2e and not cluster" -n $(TEST_WORKERS)

# the `cluster` tests: a single-node SLURM cluster on this machine (workflow/cluster/local-slurm.sh; root,
# apt-get install slurm-wlm munge)
test-cluster: install
	python -m pip install -q -e '.[slurm]'
	python -m pytest -m cluster -p no:xdist

lint: install
	ruff check src tests

clean:
	rm -rf data models logs .snakemake

# medrepro — `make run` (embedded pipeline), `make test` (every test but `cluster`), `make test-fast` (the inner loop:
# no `slow`/`e2e` tests); each creates .venv with the pinned stack first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_TOOLS := .lock-tools
PIP_VERSION := 26.3
UV_VERSION := 0.13.10
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE ?= 1
CORES ?= 4
# pytest-xdist workers; the tiny DAG of the e2e tests is built once for all of them
TEST_WORKERS ?= 2

.PHONY: install lock run test test-fast test-cluster lint clean

install: $(STAMP)

# the whole environment comes from requirements.lock (every package pinned, with hashes); pyproject.toml keeps the
# ranges the lock is solved from. `make lock` solves it again (uv, for every platform) after a change of
# pyproject.toml's dependencies; commit both.
$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q pip==$(PIP_VERSION)
	$(VENV)/bin/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	$(VENV)/bin/python -m pip check
	touch $(STAMP)

lock:
	test -x $(LOCK_TOOLS)/bin/uv || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q uv==$(UV_VERSION); }
	$(LOCK_TOOLS)/bin/uv pip compile pyproject.toml --extra dev --extra slurm --universal --python-version 3.11 \
	  --generate-hashes --custom-compile-command 'make lock' -o $(LOCK)

# snakemake --cores $(CORES) --rerun-incomplete results/table3.csv, after removing the stale lock of a killed run
# when no Snakemake process is using this folder (src/medrepro/recover.py)
run: install
	python -m medrepro.recover --cores $(CORES) results/table3.csv

test: install
	python -m pytest -m "not cluster" -n $(TEST_WORKERS)

test-fast: install
	python -m pytest -m "not slow and not e2e and not cluster" -n $(TEST_WORKERS)

# the `cluster` tests: a single-node SLURM cluster on this machine (workflow/cluster/local-slurm.sh; root,
# apt-get install slurm-wlm munge)
test-cluster: install
	python -m pytest -m cluster -p no:xdist

lint: install
	ruff check src tests

clean:
	rm -rf data models logs .snakemake

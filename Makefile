# The two set-up commands of the README:
#   make run    create .venv, install, run the whole default DAG, build results/report.html
#   make test   create .venv, install with test extras (and SLURM + munge, as root), run the test suite
# Override: make run CORES=8 SNAKEMAKE_ARGS="--configfile config/medmnist_pneumonia.yaml"
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
SNAKEMAKE_ARGS ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# headless plotting and no telemetry, on laptops, clusters and CI alike
export MPLBACKEND := Agg
export DVC_NO_ANALYTICS := 1

.PHONY: run test install install-test report dry-run lint format clean dvc-repro

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and alone: 'torch==2.13.0' takes the local CPU build where there is one
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e .
	touch $@

# the SLURM tests start a private one-node cluster from Debian's slurm-wlm and munge
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e ".[test]"
	bash tests/install_slurm.sh
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --report results/report.html $(SNAKEMAKE_ARGS)

report: install
	$(BIN)/snakemake --report results/report.html $(SNAKEMAKE_ARGS)

dry-run: install
	$(BIN)/snakemake --dry-run --cores $(CORES) $(SNAKEMAKE_ARGS)

# ruff (lint and format) for the Python, snakefmt for the rules (tests/test_lint.py runs the
# same in CI); Snakemake's own linter exits 1 for its conda-per-rule advice, which
# tests/test_workflow_dag.py checks is the only lint left, so it is printed, not enforced
lint: install-test
	$(BIN)/ruff check src scripts tests benchmarks
	$(BIN)/ruff format --check src scripts tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	-$(BIN)/snakemake --lint

format: install-test
	$(BIN)/ruff check --fix src scripts tests benchmarks
	$(BIN)/ruff format src scripts tests benchmarks
	$(BIN)/snakefmt Snakefile workflow/rules

# DVC runs the stages' commands (snakemake) from PATH: the virtualenv's, activated or not
dvc-repro: install
	$(PIP) install --quiet -e ".[dvc]"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf results/* logs .snakemake

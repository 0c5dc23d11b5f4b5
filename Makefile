# The two set-up commands of the README: `make run` and `make test`.
# Both create the virtual environment in .venv and fetch the model weights first, so a
# fresh checkout needs nothing else than Python 3.11+, make and (for tests) PostgreSQL
# and Redis on localhost (tests that need them are skipped without, unless CI=true).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
FACECAT := $(VENV)/bin/facecat
# Reinstalled when pyproject.toml changes.
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 5000
# Two xdist workers: the suite is CPU-bound (model tests, schemathesis) and each worker
# gets its own PostgreSQL database, so two processes use both cores of a small machine.
PYTEST_ARGS ?= -n 2

.PHONY: help run test weights install lint

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(INSTALLED): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: the CPU build the tests and the benchmarks were run with.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $@

install: $(INSTALLED)  ## create .venv and install facecat with its dev tools

weights: $(INSTALLED)  ## fetch and verify the model weights (idempotent, offline once done)
	$(FACECAT) models fetch --legacy

run: weights  ## migrate, serve on http://$(HOST):$(PORT) at once, seed and grow the catalog beside it
	$(FACECAT) db upgrade
	# In the background, in its own session (so Ctrl-C reaches only the server): an empty
	# catalog first gets INGEST_SEED_COUNT faces aimed at every gender x age cell
	# (photoreal faces take about a second each on a CPU, so this takes minutes), then the
	# worker keeps growing it. The server answers at once: until a filter has stored
	# faces, on-demand generation makes them. When the server exits, the group gets
	# SIGTERM: a seeding run stops (rows are written last, so nothing is half-stored),
	# the worker finishes its batch and stops.
	# (setsid is util-linux's; where it is missing, e.g. macOS, the job runs without one.)
	# The facegen worker runs look-alike jobs (/api/v6/image_editing/face_gen) beside it.
	$$(command -v setsid || true) bash -c '$(FACECAT) facegen worker & $(FACECAT) ingest run --if-empty && exec $(FACECAT) ingest worker' & \
	worker=$$!; \
	trap 'kill -TERM -- -$$worker 2>/dev/null || kill -TERM $$worker 2>/dev/null || true; wait $$worker || true' EXIT; \
	$(FACECAT) run --host $(HOST) --port $(PORT)

test: weights  ## run the whole test suite (exit status is pytest's)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(INSTALLED)  ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

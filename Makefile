# docstatus developer tasks. `make test` is what CI runs (see .ci/run).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp records "this venv has the current pyproject.toml installed":
# make re-installs only when pyproject.toml is newer than the stamp.
STAMP  := $(VENV)/.installed-from-pyproject

PYTEST_ARGS ?=

.PHONY: venv azurite test lint migrate bench clean migration-checksums

# Azurite (the Azure Blob Storage emulator) from npm, pinned: newer releases need a newer Node.
AZURITE_VERSION := 3.35.0
AZURITE_PREFIX  := .local/azurite
AZURITE_STAMP   := $(AZURITE_PREFIX)/.installed-$(AZURITE_VERSION)

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[all,test,notebook,dashboard]'
	touch $@

# The test fixtures start a private PostgreSQL from the installed server binaries
# (as the postgres user when run as root), or use $DOCSTATUS_TEST_DSN if set.
test: $(STAMP) $(AZURITE_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (lint and import order) and mypy (strict on the client library), as configured in
# pyproject.toml. CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

azurite: $(AZURITE_STAMP)

$(AZURITE_STAMP):
	npm install --no-audit --no-fund --prefix $(AZURITE_PREFIX) azurite@$(AZURITE_VERSION)
	touch $@

migrate: $(STAMP)
	@test -n "$$DOCSTATUS_DSN" || { echo "set DOCSTATUS_DSN (libpq conninfo or postgresql:// URL)" >&2; exit 2; }
	$(VENV)/bin/docstatus migrate

# Benchmarks run on demand, never as part of `make test`.
# Each script measures against a baseline of its own in the same run.
bench: $(STAMP) $(AZURITE_STAMP)
	$(PY) bench/lifecycle.py
	$(PY) bench/client_overhead.py
	$(PY) bench/subscriber_latency.py
	$(PY) bench/dms_throughput.py
	$(PY) bench/pipeline_throughput.py

# The whole pipeline on this machine, no Docker: an embedded PostgreSQL and Azurite (npm) under
# .local/, the sample documents through the worker, a status table. They keep running for you
# to explore until `make demo-down`. DOCSTATUS_DSN / AZURE_STORAGE_CONNECTION_STRING, when set,
# are used instead (e.g. `docker compose up -d --wait` first) and left alone.
# `make demo-clean` (or `make demo-down PURGE=1`) also deletes the demo's data: .local/pg (the
# cluster, wherever it lives) and .local/demo (Azurite's blobs).
.PHONY: demo demo-down demo-clean
demo: $(STAMP)
	$(PY) -m docstatus.dev.demo up

demo-down: $(STAMP)
	$(PY) -m docstatus.dev.demo down $(if $(PURGE),--purge)

demo-clean: $(STAMP)
	$(PY) -m docstatus.dev.demo down --purge

# The walk-through notebook on the demo's services (started if they are not running; or those of
# DOCSTATUS_DSN / AZURE_STORAGE_CONNECTION_STRING). notebook-outputs runs it from a clean kernel
# and saves its outputs into the file, as committed.
NOTEBOOK := notebooks/06_document_processing_status.ipynb
.PHONY: notebook notebook-outputs
notebook: $(STAMP) $(AZURITE_STAMP)
	eval "$$($(PY) -m docstatus.dev.demo env)" && $(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK)

notebook-outputs: $(STAMP) $(AZURITE_STAMP)
	eval "$$($(PY) -m docstatus.dev.demo env)" && $(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=300 $(NOTEBOOK)

# Landed migrations never change: database/migrations.sha256 records each file's checksum and
# tests/migrations checks them. This appends the files not listed yet and never rewrites a line.
migration-checksums:
	cd database && for file in migrations/*; do \
	    grep -q "  $$file$$" migrations.sha256 2>/dev/null || sha256sum "$$file" >> migrations.sha256; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache .mypy_cache build dist
	find . -name __pycache__ -type d -not -path './.local/*' -prune -exec rm -rf {} +
	rm -rf python_client/*.egg-info

# docstatus developer tasks. `make test` is what CI runs (see .ci/run).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The stamp records "this venv has the current pyproject.toml installed":
# make re-installs only when pyproject.toml is newer than the stamp.
STAMP  := $(VENV)/.installed-from-pyproject

PYTEST_ARGS ?=

.PHONY: venv test migrate bench clean

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The test fixtures start a private PostgreSQL from the installed server binaries
# (as the postgres user when run as root), or use $DOCSTATUS_TEST_DSN if set.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

migrate: $(STAMP)
	@test -n "$$DOCSTATUS_DSN" || { echo "set DOCSTATUS_DSN (libpq conninfo or postgresql:// URL)" >&2; exit 2; }
	$(VENV)/bin/docstatus migrate

# Benchmarks run on demand, never as part of `make test`.
# Placeholder: bench/lifecycle.py is to be written; add further scripts here.
bench: $(STAMP)
	$(PY) bench/lifecycle.py

# --- demo / demo-down: to be added (docker compose up/down of compose.yml, etc.) ---

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path './.local/*' -prune -exec rm -rf {} +
	rm -rf python_client/*.egg-info

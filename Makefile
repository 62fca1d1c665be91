# Two commands matter: `make run` starts the whole portal on this machine, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup venv idp translations chromium services lint env

run: setup
	$(BIN)/python -m scripts.run_local

test: setup chromium services lint
	$(BIN)/python -m pytest

setup: venv idp translations

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	  { echo "Python 3.11 is required; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

idp: devidp/node_modules/.installed

devidp/node_modules/.installed: devidp/package.json devidp/package-lock.json
	cd devidp && npm ci --no-audit --no-fund --loglevel=error
	touch $@

translations: venv
	$(BIN)/pybabel compile -d portal/translations 2>&1 | grep -v '^compiling' || true

# Browser tests drive Debian's Chromium; Playwright's own browser download is never used.
chromium:
	@command -v chromium >/dev/null || scripts/install-chromium.sh

# CI machines run PostgreSQL and Redis already; start them when they are stopped.
services:
	@scripts/ensure-services.sh

# The deployment tests (tests/deploy) lint the Dockerfile with hadolint and the workflow
# with actionlint; this target runs the linters on their own.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/actionlint .github/workflows/ci.yml

# Write .env with generated secrets without starting anything; `docker compose` reads it.
env: venv
	$(BIN)/python -c "from scripts.run_local import ensure_env_file; ensure_env_file()"

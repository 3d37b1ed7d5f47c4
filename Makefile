# The two commands: `make run` (set up, then the whole stack on the embedded NATS + Valkey)
# and `make test` (set up, then the whole test suite). Only Python 3.11+ is needed beforehand.
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")

.PHONY: setup test-deps run test test-slow lint format bench compose-test

setup:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || \
		$(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen

# Debian's chromium and fonts-noto-cjk for the console's browser tests (when missing and root).
test-deps:
	bash scripts/test-deps.sh

run: setup
	$(UV) run supie up

test: setup test-deps
	$(UV) run pytest -m "not slow"

# The long end-to-end suites (crash matrix, outages, multi-host): CI runs them after `make test`.
test-slow: setup test-deps
	$(UV) run pytest -m slow

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: setup
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: setup
	$(UV) run python bench/gateway_load.py

# docker-compose.yml, executed under podman with locally built images (two replicas of every
# service, a badge meeting through it, torn down after). Needs root for the podman install.
compose-test: setup
	bash scripts/compose-test.sh

# The two commands a newcomer needs: `make run` (the service on its embedded Redis)
# and `make test` (the whole suite). Both create or update .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` deploys the demo (deployhook up --demo: a local repository of the sample app under
# .demo) unless DEPLOYHOOK_CONFIG or ./deploy.yml names a config of your own.
DEMO := $(if $(or $(DEPLOYHOOK_CONFIG),$(wildcard deploy.yml)),,--demo)

.PHONY: run test lint typecheck check-config bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/deployhook up $(DEMO)

# The suite runs in two parts: first everything that can share the Docker engine, spread over
# TEST_WORKERS processes (pytest-xdist; the Docker-backed tests spend most of their time waiting
# on the engine, so more processes than cores pay), then the `exclusive` tests (they stop
# dockerd) alone. Exit status 5 of the second part means "none selected" (PYTEST_ARGS named
# other tests). TEST_WORKERS=0 runs the first part in this one process.
TEST_WORKERS ?= 4

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not exclusive" $(PYTEST_ARGS)
	$(BIN)/pytest -p no:xdist -m exclusive $(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check-config: $(STAMP)
	$(BIN)/deployhook config check --config $(or $(DEPLOYHOOK_CONFIG),examples/deploy.yml)

# Benchmarks (bench/README.md): each prints a table and writes bench/results/<name>.json.
# overhead, downtime, backup, build_cache and footprint need the Docker engine with Compose v2 (downtime
# also the HAProxy test image); listing seeds 100,000 records in Redis.
bench: $(STAMP)
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/downtime.py
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/build_cache.py
	$(BIN)/python bench/remote_promotion.py
	$(BIN)/python bench/registry_shipping.py
	$(BIN)/python bench/listing.py
	$(BIN)/python bench/footprint.py --deploy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

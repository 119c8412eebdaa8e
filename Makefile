# blina-cds — the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
FHIR_VENV := .venv-fhir
PY := $(VENV)/bin/python
PIP_FLAGS := --disable-pip-version-check -q

.PHONY: install install-test run test test-fast lint bench microbench chaos soak nginx wrk fhir-server fhir-dev postgres chromium venv-support clean

# Debian ships `venv`/`ensurepip` apart from Python (python3.11-venv): a fresh machine cannot create a venv
# without it. Install it when we can (CI runs as root), otherwise say what is missing.
venv-support:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  pkg="python$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $$pkg from Debian"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$$pkg" >/dev/null; \
	  else \
	    echo "$(PYTHON) cannot create a virtual environment: install $$pkg (e.g. sudo apt-get install $$pkg)" >&2; \
	    exit 1; \
	  fi; }

$(VENV)/.installed: pyproject.toml | venv-support
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install $(PIP_FLAGS) -e '.[test]'
	touch $@

## install: create .venv and install the service
install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## run: start the service on http://127.0.0.1:8000 (development: no JWT, CORS open, SQLite under ./var/)
run: install
	mkdir -p var
	BLINA_CDS_AUTH=$${BLINA_CDS_AUTH:-off} $(VENV)/bin/blina-cds serve

# The real FHIR R4 server for integration tests, in its own venv so its pins never constrain ours.
$(FHIR_VENV)/.installed: | venv-support
	test -x $(FHIR_VENV)/bin/python || $(PYTHON) -m venv $(FHIR_VENV)
	$(FHIR_VENV)/bin/python -m pip install $(PIP_FLAGS) sekmet-fhir==0.1.1
	touch $@

fhir-server: $(FHIR_VENV)/.installed

FHIR_PORT ?= 8091

## fhir-dev: run the test FHIR server on http://127.0.0.1:$(FHIR_PORT)/fhir (default 8091; `make fhir-dev FHIR_PORT=8092`)
fhir-dev: fhir-server
	mkdir -p var/fhir-data
	printf 'base_url: http://127.0.0.1:$(FHIR_PORT)/fhir\nhost: 127.0.0.1\nport: $(FHIR_PORT)\ndata_dir: var/fhir-data\nsimulator:\n  enabled: false\nlog_inbound: false\n' > var/fhir-settings.yaml
	$(FHIR_VENV)/bin/sekmet serve -c var/fhir-settings.yaml

## postgres: PostgreSQL from Debian (pg_virtualenv gives each test run a throw-away cluster)
postgres:
	@command -v pg_virtualenv >/dev/null || { \
	  echo "installing PostgreSQL from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-common >/dev/null; }

## nginx: Debian's nginx for the reference deployment (deploy/nginx/blina-cds.conf) that make chaos/soak start
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  echo "installing nginx from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }

## wrk: Debian's wrk, the HTTP load generator make bench drives
wrk:
	@command -v wrk >/dev/null || { \
	  echo "installing wrk from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

## chromium: Debian's Chromium for the /preview browser tests (Playwright drives it; it never downloads a browser)
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing Chromium from Debian"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The suite runs on $(PYTEST_WORKERS) pytest-xdist workers, each test file on one worker (module fixtures stay in one
# process); the tests marked `alone` (latency bounds, a load calibrated to the machine) run afterwards by themselves.
# PYTEST_WORKERS=0 runs everything in one process. Either part failing fails the target; a part that PYTEST_ARGS
# leaves empty (pytest's exit 5) does not, unless both are empty.
PYTEST_WORKERS ?= 2

## test: install what the tests need, lint, and run the whole suite (SQLite and PostgreSQL, real FHIR server)
test: install-test fhir-server postgres nginx chromium lint
	pg_virtualenv -t sh -c 'export BLINA_CDS_TEST_POSTGRES_URL=postgresql://; \
	  $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not alone" $(PYTEST_ARGS); shared=$$?; \
	  $(PY) -m pytest -m alone $(PYTEST_ARGS); alone=$$?; \
	  echo "pytest exit codes: parallel part $$shared, tests run alone $$alone"; \
	  case "$$shared.$$alone" in 0.0|0.5|5.0) ;; *) exit 1;; esac'

## test-fast: unit tests only (no FHIR server, no PostgreSQL, no browser)
test-fast: install-test
	$(PY) -m pytest -m "not fhir_server and not postgres and not browser" $(PYTEST_ARGS)

## bench: the service against a bare-FastAPI floor, side by side (wrk), memory and workers; tests/bench/RESULTS.md (exits 1 when a target is missed)
bench: install-test wrk
	$(PY) -m tests.bench.harness $(BENCH_ARGS)

## microbench: per-stage micro-benchmarks with real timings (`make test` runs them once, untimed); saved under var/microbench and compared with the last run
MICROBENCH_SAVED = $(wildcard var/microbench/*/*.json)
microbench: install-test
	$(PY) -m pytest tests/bench/test_microbench.py -q --benchmark-enable --benchmark-sort=name \
	  --benchmark-columns=min,median,mean,stddev,rounds --benchmark-storage=var/microbench --benchmark-autosave \
	  $(if $(MICROBENCH_SAVED),--benchmark-compare) $(MICROBENCH_ARGS)

# The reliability runs: nginx, two replicas sharing a throw-away PostgreSQL, sekmet-fhir (tests/reliability/).
SOAK_SECONDS ?= $(or $(BLINA_CDS_SOAK_SECONDS),600)
RELIABILITY := pg_virtualenv -t sh -c 'BLINA_CDS_TEST_POSTGRES_URL=postgresql:// $(PY) -m tests.reliability.harness

## chaos: mixed load through nginx while one replica is killed (SIGKILL) and restarted; figures to tests/reliability/RESULTS.md
chaos: install-test fhir-server postgres nginx
	$(RELIABILITY) chaos $(CHAOS_ARGS)'

## soak: $(SOAK_SECONDS) s (default 600; `make soak SOAK_SECONDS=120`) at 70% of the calibrated throughput, per-minute figures
soak: install-test fhir-server postgres nginx
	$(RELIABILITY) soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)'

## lint: ruff and mypy --strict
lint: install-test
	$(VENV)/bin/ruff check service tests fhir_examples
	$(VENV)/bin/mypy service

clean:
	rm -rf $(VENV) $(FHIR_VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info

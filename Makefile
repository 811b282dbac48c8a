# parcel-risk: the two commands are `make run` and `make test`; everything else they need
# (virtualenv, pip install, Kafka from Maven Central, a default model) is set up here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
KAFKA  := deploy/kafka/target/libs/.fetched
MODEL  := artifacts/models
SCHEMAS := .local/schemas/.fetched
KAFKA_PORT ?= 9092
export KAFKA_PORT


.PHONY: run test unit integration slow bench lint setup tools promtool kafka-start kafka-stop model clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

$(KAFKA): deploy/kafka/pom.xml
	$(PYTHON) deploy/kafka/broker.py fetch
	touch $@

# CRD schemas for validating deploy/k8s offline (Strimzi via Maven, KEDA and the Prometheus
# Operator via the Go module proxy); cached in .local/schemas
$(SCHEMAS): deploy/k8s/fetch_schemas.py $(STAMP)
	$(BIN)/python deploy/k8s/fetch_schemas.py
	touch $@

# promtool (Debian's prometheus package) checks deploy/prometheus
promtool:
	@command -v promtool >/dev/null 2>&1 || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
	  >/dev/null; }

setup: $(STAMP) $(KAFKA)

# kcat (Debian) is a real peer for the tests that read holds like an analyst's tools do
tools:
	@command -v kcat >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq kcat) >/dev/null 2>&1; } \
	  || echo "kcat not installed: the checks that use it are skipped"

# a first model, trained on synthetic traffic, if none of this build (its features) exists yet
model: setup
	$(BIN)/parcel-risk train --if-missing

## make run: broker, worker, synthetic feed and a live view of holds; Ctrl-C stops them all
run: model
	$(BIN)/parcel-risk run

## make test: unit tests, then integration tests against the real local broker; `model`
## because one test runs `parcel-risk run` with every default, artifacts/models included
test: setup tools promtool $(SCHEMAS) model
	$(BIN)/ruff check streams models tests benchmarks deploy
	$(BIN)/ruff format --check streams models tests benchmarks deploy
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

unit: setup
	$(BIN)/python -m pytest -q -m "not slow and not integration"

integration: setup model
	$(BIN)/python -m pytest -q -m "integration and not slow"

slow: setup
	$(BIN)/python -m pytest -q -m slow -o addopts=""

## make bench: compute cost per decision (no broker), throughput, latency, a start on a backlog, worker state at
## scale, model quality (real broker); about an hour on 2 cores; figures in benchmarks/RESULTS.md
bench: setup
	$(BIN)/python -m benchmarks.compute
	$(PYTHON) deploy/kafka/broker.py start
	$(BIN)/python -m benchmarks.stream_floor
	$(BIN)/python -m benchmarks.throughput --workers 1 2
	$(BIN)/python -m benchmarks.latency
	$(BIN)/python -m benchmarks.backlog
	$(BIN)/python -m benchmarks.state
	$(BIN)/python -m benchmarks.model_quality

lint: setup
	$(BIN)/ruff check streams models tests benchmarks deploy
	$(BIN)/ruff format --check streams models tests benchmarks deploy
	$(BIN)/mypy

kafka-start: setup
	$(PYTHON) deploy/kafka/broker.py start

kafka-stop:
	$(PYTHON) deploy/kafka/broker.py stop

clean:
	-$(PYTHON) deploy/kafka/broker.py stop
	rm -rf .local $(VENV) deploy/kafka/target

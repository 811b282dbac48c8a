# parcel-risk: the two commands are `make run` and `make test`; everything else they need
# (virtualenv, pip install, Kafka from Maven Central, a default model) is set up here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
KAFKA  := deploy/kafka/target/libs/.fetched
MODEL  := artifacts/models
KAFKA_PORT ?= 9092
export KAFKA_PORT

.PHONY: run test unit integration slow bench lint setup kafka-start kafka-stop model clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

$(KAFKA): deploy/kafka/pom.xml
	$(PYTHON) deploy/kafka/broker.py fetch
	touch $@

setup: $(STAMP) $(KAFKA)

# a first model, trained on synthetic traffic, if none exists yet
model: setup
	$(BIN)/parcel-risk train --if-missing

## make run: broker, worker, synthetic feed and a live view of holds; Ctrl-C stops them all
run: model
	$(BIN)/parcel-risk run

## make test: unit tests, then integration tests against the real local broker
test: setup
	$(BIN)/ruff check streams models tests benchmarks deploy
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

unit: setup
	$(BIN)/python -m pytest -q -m "not slow and not integration"

integration: setup
	$(BIN)/python -m pytest -q -m "integration and not slow"

slow: setup
	$(BIN)/python -m pytest -q -m slow -o addopts=""

bench: setup
	$(BIN)/python -m benchmarks.model_quality

lint: setup
	$(BIN)/ruff check streams models tests benchmarks deploy

kafka-start: setup
	$(PYTHON) deploy/kafka/broker.py start

kafka-stop:
	$(PYTHON) deploy/kafka/broker.py stop

clean:
	-$(PYTHON) deploy/kafka/broker.py stop
	rm -rf .local $(VENV) deploy/kafka/target

# Two commands for a fresh machine: `make run` (service with demo data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
export IVR_DB ?= instance/ivr.sqlite3

.PHONY: setup run test quick lint clean

$(BIN)/ivr: pyproject.toml
	bash scripts/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/ivr

setup: $(BIN)/ivr

run: setup
	$(BIN)/ivr init-db --demo
	@token="$${IVR_TWILIO_AUTH_TOKEN:-$$($(BIN)/ivr dev-token)}"; \
	echo "Local Twilio auth token (sign test requests with it): $$token"; \
	echo "Webhook: POST http://$(HOST):$(PORT)/twilio/voice  health: http://$(HOST):$(PORT)/healthz"; \
	IVR_TWILIO_AUTH_TOKEN="$$token" exec $(BIN)/ivr serve --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/python -m pytest

quick: setup
	$(BIN)/python -m pytest -m "not slow and not speech and not browser"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands for a fresh machine: `make run` (service with demo data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8080
# `ivr call` serves its recordings here; `make run` fetches recordings from this host only
# (and sends the Twilio credentials nowhere else). For real Twilio recordings set
# IVR_RECORDING_HOSTS=api.twilio.com.
MEDIA_PORT ?= 8081
# The emulator's Twilio REST stand-in (`ivr call --twilio-port`): queued callers, callbacks,
# SMS and live speech go through it on a local run.
TWILIO_PORT ?= 8083
# A local run's account SID (not a secret: the stand-in and the media host check it).
DEV_ACCOUNT_SID ?= AC00000000000000000000000000000001
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
	@awk -F'\t' '$$1 == "ivanova" { print "sign in at http://$(HOST):$(PORT)/console as ivanova / " $$2 }' "$(dir $(IVR_DB))demo-accounts.txt" 2>/dev/null || true
	@$(BIN)/ivr models ensure || true
	@token="$${IVR_TWILIO_AUTH_TOKEN:-$$($(BIN)/ivr dev-token)}"; \
	account="$${IVR_TWILIO_ACCOUNT_SID:-$(DEV_ACCOUNT_SID)}"; \
	for setting in $$($(BIN)/ivr models env); do export "$$setting"; done; \
	echo "Local Twilio auth token (sign test requests with it): $$token"; \
	echo "Webhook: POST http://$(HOST):$(PORT)/twilio/voice  health: http://$(HOST):$(PORT)/healthz"; \
	echo "Call it from another terminal: IVR_TWILIO_ACCOUNT_SID=$$account $(BIN)/ivr call --base-url http://$(HOST):$(PORT) --media-port $(MEDIA_PORT) --twilio-port $(TWILIO_PORT)"; \
	IVR_TWILIO_AUTH_TOKEN="$$token" IVR_TWILIO_ACCOUNT_SID="$$account" \
	IVR_TWILIO_API_URL=$${IVR_TWILIO_API_URL:-http://127.0.0.1:$(TWILIO_PORT)} \
	IVR_ALLOW_SIMULATED_TIME=$${IVR_ALLOW_SIMULATED_TIME:-1} \
	IVR_RECORDING_HOSTS=$${IVR_RECORDING_HOSTS:-127.0.0.1:$(MEDIA_PORT)} \
	exec $(BIN)/ivr serve --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/python -m pytest

quick: setup
	$(BIN)/python -m pytest -m "not slow and not speech and not browser"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache

"""Shared fixtures: a fresh app and database per test, and Twilio's side of a call."""

from __future__ import annotations

from datetime import datetime

import pytest

from ivr import db as database
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.emulator import EmulatedCall, FlaskTransport
from ivr.emulator.twiml_rules import WAIT_URL_VERBS, TwimlRefused, check
from ivr.hours import parse_instant
from ivr.web import twilio_http
from ivr.web.app import create_app

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
OPEN_NOW = "2026-11-26T12:00:00+03:00"
CLOSED_NOW = "2026-11-26T21:30:00+03:00"
DOMESTIC = "+78002345555"
INTERNATIONAL = "+74952321000"
CALLER = "+79161234567"

DEMO_OPERATORS = [
    {
        "full_name": "Иванова Мария Сергеевна",
        "name_en": "Maria Ivanova",
        "languages": "ru,en",
        "endpoint": "+79990000001",
        "shift_start": "08:00",
        "shift_end": "20:00",
    },
    {
        "full_name": "Петров Алексей Николаевич",
        "name_en": "Alexey Petrov",
        "languages": "ru",
        "endpoint": "sip:petrov@pbx.example.ru",
        "shift_start": "08:00",
        "shift_end": "20:00",
    },
]


def add_operators(db_path: str, operators=DEMO_OPERATORS) -> None:
    """Put operators on the roster of the database at db_path."""
    with database.connect(db_path) as db:
        for operator in operators:
            roster_store.insert_operator(
                db, {**operator, "created_at": "2026-01-01T00:00:00.000+00:00"}
            )
        db.conn.commit()


CHECKED_TWIML = {"documents": 0}


@pytest.fixture(autouse=True)
def every_twiml_answer_passes_the_strict_table(monkeypatch):
    """Every TwiML document the service answers with, in every test, is one Twilio accepts
    (ivr.emulator.twiml_rules): a refused document fails the test that produced it."""
    answer = twilio_http.twiml
    refused: list[str] = []

    def checked(body: str):
        from flask import request

        if not body:  # a notification's (status, recording status) stored empty answer
            return answer(body)
        waiting = request.endpoint in ("operator_hooks.queue_wait", "operator_hooks.queue_offer")
        verbs = WAIT_URL_VERBS if waiting else None
        try:
            check(body, allowed_verbs=verbs, loopback_ws=True)
        except TwimlRefused as error:  # noted here: the app's error handler would hide it
            refused.append(f"{request.path}: {error}\n{body}")
            raise
        CHECKED_TWIML["documents"] += 1
        return answer(body)

    monkeypatch.setattr(twilio_http, "twiml", checked)
    yield
    assert not refused, "TwiML Twilio would refuse:\n" + "\n".join(refused)


@pytest.fixture
def db_path(tmp_path) -> str:
    return str(tmp_path / "ivr.sqlite3")


@pytest.fixture
def make_app(db_path):
    """Build an app at a given instant (IVR_NOW) with the demo roster."""

    def make(now: str = OPEN_NOW, operators=DEMO_OPERATORS, **overrides):
        config = {
            "db_path": db_path,
            "auth_token": AUTH_TOKEN,
            "now": parse_instant(now) if now else None,
            **overrides,
        }
        app = create_app(config)
        if operators:
            add_operators(db_path, operators)
        return app

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def call(app):
    """Start a call on a line: call(to=..., from_=...) -> EmulatedCall already answered."""

    def start(**kwargs) -> EmulatedCall:
        transport = FlaskTransport(app.test_client())
        return EmulatedCall(transport, "http://localhost", AUTH_TOKEN, **kwargs).start()

    return start


@pytest.fixture
def db(app, db_path):
    with database.connect(db_path) as connection:
        yield connection


def moscow(text: str) -> datetime:
    return parse_instant(text)


@pytest.fixture
def run_scenario():
    """Run a scenario file against a fresh app on loopback (real HTTP, real waitress).

    Returns (report, calls) where calls is what `ivr calls list --json` prints.
    """
    from ivr.call_log import call_record
    from ivr.devserver import LocalServer
    from ivr.emulator import TwilioStandIn
    from ivr.scenarios import Runner, load_scenario, server_overrides

    servers = []

    def run(path):
        scenario = load_scenario(path)
        settings = server_overrides(scenario)
        stand_in = None
        if scenario.needs_twilio:
            # As `ivr simulate` does: the service's REST requests go to the stand-in.
            stand_in = TwilioStandIn()
            servers.append(stand_in)
            settings.update(
                account_sid=stand_in.account_sid,
                auth_token=stand_in.auth_token,
                twilio_api_url=stand_in.base_url,
            )
        server = LocalServer(**settings)
        servers.append(server)
        with Runner(server.base_url, server.auth_token, server.db_path, twilio=stand_in) as runner:
            report = runner.run(scenario)
        with database.connect(server.db_path) as db:
            calls = [call_record(row) for row in call_store.list_calls(db, limit=1000)]
        return report, calls

    yield run
    for server in servers:
        server.close()


@pytest.fixture
def media():
    """The emulator's media host: serves recordings over HTTP on loopback like Twilio's."""
    from ivr.emulator import MediaServer

    host = MediaServer()
    yield host
    host.close()


@pytest.fixture
def speech_server(tmp_path):
    """Start the real app on waitress: speech_server(engine=None, **settings) -> LocalServer.

    Recordings may be fetched from loopback (the media host) and are kept under tmp_path.
    """
    from ivr.devserver import LocalServer

    servers = []

    def start(engine=None, **settings):
        settings.setdefault("recording_hosts", ("127.0.0.1",))
        settings.setdefault("recordings_dir", str(tmp_path / f"recordings-{len(servers)}"))
        server = LocalServer(
            db_path=str(tmp_path / f"ivr-{len(servers)}.sqlite3"),
            speech_engine=engine,
            **settings,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def pytest_terminal_summary(terminalreporter):
    """Say how many TwiML answers were checked against the strict table in this run."""
    if CHECKED_TWIML["documents"]:
        terminalreporter.write_line(
            f"TwiML answers checked against Twilio's table: {CHECKED_TWIML['documents']}"
        )

"""The ACD: presence, the dispatcher, operator legs, the queue's wait URL, callbacks, SMS.

Twilio's REST API is the boundary: a small fake records what the service asked of it,
with the adapter's interface (ivr.twilio_api.TwilioApi). Everything else is real: SQLite,
the app through Flask's test client, signed webhooks, the emulated caller.
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from conftest import AUTH_TOKEN, DEMO_OPERATORS, OPEN_NOW, add_operators

from ivr import db as database
from ivr import dispatch
from ivr.db import acd as acd_store
from ivr.dispatch import Dispatcher, estimate_wait_minutes, pick_operator
from ivr.emulator import EmulatedCall, FlaskTransport
from ivr.emulator.http import new_sid, sign
from ivr.hours import Clock, parse_instant
from ivr.operators import Operator
from ivr.web.app import create_app

BASE = "http://localhost"


class FakeTwilioError(Exception):
    """Like ivr.twilio_api.TwilioApiError."""

    def __init__(self, message: str, status: int = 503, code: int = 0, retryable: bool = True):
        super().__init__(message)
        self.status, self.code, self.retryable = status, code, retryable


class FakeTwilioApi:
    """Records what the service asks of Twilio's REST API (the adapter's interface)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.messages: list[dict] = []
        self.fetched: list[str] = []
        self.fail_next = 0
        self.statuses: dict[str, dict] = {}
        self.lock = threading.Lock()

    def create_call(
        self,
        *,
        to,
        from_,
        url=None,
        twiml=None,
        status_callback=None,
        status_callback_events=("initiated", "ringing", "answered", "completed"),
        timeout=None,
        caller_id=None,
    ) -> str:
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                raise FakeTwilioError("Service Unavailable")
            sid = new_sid("CA")
            self.calls.append(
                {
                    "sid": sid,
                    "to": to,
                    "from": from_,
                    "url": url,
                    "status_callback": status_callback,
                    "timeout": timeout,
                }
            )
            return sid

    def update_call(self, sid, *, url=None, twiml=None, status=None) -> None:
        raise AssertionError("not used by the service")

    def fetch_call(self, sid) -> dict:
        self.fetched.append(sid)
        return self.statuses.get(sid, {"sid": sid, "status": "in-progress"})

    def send_message(self, *, to, from_, body, status_callback=None) -> str:
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                raise FakeTwilioError("Service Unavailable")
            sid = new_sid("SM")
            self.messages.append(
                {
                    "sid": sid,
                    "to": to,
                    "from": from_,
                    "body": body,
                    "status_callback": status_callback,
                }
            )
            return sid


@pytest.fixture
def fake():
    return FakeTwilioApi()


@pytest.fixture
def acd_app(db_path, fake):
    """An app with the fake REST adapter; the dispatcher runs in the triggering thread."""

    def make(operators=DEMO_OPERATORS, **overrides):
        config = {
            "db_path": db_path,
            "auth_token": AUTH_TOKEN,
            "now": parse_instant(OPEN_NOW),
            "public_url": BASE,
            "dispatch_interval_seconds": 0,
            **overrides,
        }
        app = create_app(config, twilio_api=fake)
        add_operators(db_path, operators)
        return app

    return make


def set_presence(db_path: str, operator_id: int, presence: str) -> None:
    with database.connect(db_path) as db, database.write_transaction(db):
        acd_store.set_presence(db, operator_id, presence, datetime.now(UTC))


def queued_caller(app, **kwargs) -> EmulatedCall:
    """A caller who asks for an operator and ends up in the queue."""
    call = EmulatedCall(FlaskTransport(app.test_client()), BASE, AUTH_TOKEN, **kwargs)
    return call.start().press("0").silence()


def signed_post(app, path: str, form: dict):
    headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, BASE + path, form)}
    return app.test_client().post(path, data=form, headers=headers, base_url=BASE)


def leg_of(placed: dict) -> str:
    return re.search(r"/twilio/operator/(LG[0-9a-f]{32})$", placed["url"]).group(1)


# Pure decisions --------------------------------------------------------------------------


def _operator(id, languages="ru", open_tickets=0):
    return Operator(
        id=id,
        full_name=f"op{id}",
        languages=frozenset(languages.split(",")),
        endpoint=f"+7999000000{id}",
        shift_start=parse_instant(OPEN_NOW).time(),
        shift_end=parse_instant(OPEN_NOW).time(),
        open_tickets=open_tickets,
    )


@pytest.mark.parametrize(
    "language, preferred, free, tried, expected",
    [
        ("ru", None, [(1, "ru", 3), (2, "ru", 1)], {}, 2),  # fewest open tickets
        ("ru", 1, [(1, "ru", 3), (2, "ru", 1)], {}, 1),  # the ticket's own operator first
        ("ru", 1, [(1, "ru", 3), (2, "ru", 1)], {1: 1}, 2),  # ...unless they did not answer
        ("en", None, [(1, "ru", 0), (2, "ru,en", 5)], {}, 2),  # speaks the language
        ("en", None, [(1, "ru", 0)], {}, None),  # an English speaker is on shift, busy
        ("ru", None, [], {}, None),
    ],
)
def test_pick_operator(language, preferred, free, tried, expected):
    operators = [_operator(id, langs, tickets) for id, langs, tickets in free]
    chosen = pick_operator(language, preferred, operators, tried, {"ru", "en"})
    assert (chosen.id if chosen else None) == expected


def test_pick_operator_takes_anyone_when_nobody_on_shift_speaks_the_language():
    chosen = pick_operator("en", None, [_operator(1, "ru")], {}, {"ru"})
    assert chosen is not None and chosen.id == 1


@pytest.mark.parametrize(
    "position, speed, serving, waited, expected",
    [
        (1, None, 2, 0, None),
        (1, 60, 1, 0, 1),
        (3, 120, 1, 0, 6),
        (3, 120, 2, 0, 4),
        (1, 120, 1, 110, 1),  # never below half a minute
    ],
)
def test_estimate_wait_minutes(position, speed, serving, waited, expected):
    assert estimate_wait_minutes(position, speed, serving, waited) == expected


# The dispatcher --------------------------------------------------------------------------


def test_queued_caller_rings_an_available_operator_who_whispers_and_dequeues(
    acd_app, fake, db_path
):
    app = acd_app()
    set_presence(db_path, 1, "away")  # the ticket's operator is away: the caller is queued
    call = queued_caller(app)
    assert call.result.queue == f"call-{call.result.call_sid}"
    assert len(fake.calls) == 1  # woken after the enqueue committed
    placed = fake.calls[0]
    assert placed["to"] == DEMO_OPERATORS[1]["endpoint"]  # Petrov: available, speaks ru
    assert placed["url"].startswith(f"{BASE}/twilio/operator/LG")
    leg = leg_of(placed)
    assert placed["status_callback"] == f"{BASE}/twilio/operator-status?leg={leg}"
    response = signed_post(
        app, f"/twilio/operator/{leg}", {"CallSid": placed["sid"], "CallStatus": "in-progress"}
    )
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Обращение номер" in body and "Тема:" in body
    assert f"<Queue>call-{call.result.call_sid}</Queue>" in body
    with database.connect(db_path) as db:
        assert acd_store.get_leg(db, leg)["state"] == "answered"
        assert acd_store.get_entry(db, call.result.call_sid)["answered_at"]


def test_away_operators_are_never_rung(acd_app, fake, db_path):
    app = acd_app()
    set_presence(db_path, 1, "away")
    set_presence(db_path, 2, "away")
    queued_caller(app)
    assert fake.calls == []
    app.extensions["ivr.dispatcher"].run_once()
    assert fake.calls == []
    set_presence(db_path, 2, "available")
    app.extensions["ivr.dispatcher"].run_once()  # the sweep (or the console's trigger)
    assert [placed["to"] for placed in fake.calls] == [DEMO_OPERATORS[1]["endpoint"]]


def test_no_answer_rings_the_next_operator(acd_app, fake, db_path):
    app = acd_app()
    call = queued_caller(app, dial_status="no-answer")  # direct dial to Ivanova failed
    first = fake.calls[0]
    response = signed_post(
        app,
        f"/twilio/operator-status?leg={leg_of(first)}",
        {"CallSid": first["sid"], "CallStatus": "no-answer"},
    )
    assert response.status_code == 204
    assert len(fake.calls) == 2 and fake.calls[1]["to"] != first["to"]
    with database.connect(db_path) as db:
        assert acd_store.get_entry(db, call.result.call_sid)["state"] == "waiting"


def test_a_reservation_expires_by_itself(acd_app, fake, db_path):
    app = acd_app()
    set_presence(db_path, 1, "away")
    queued_caller(app)
    dispatcher = app.extensions["ivr.dispatcher"]
    later = datetime.now(UTC) + timedelta(minutes=2)  # real time, not IVR_NOW
    dispatcher.desk.wall_clock._source = lambda: later
    dispatcher.run_once()
    assert len(fake.calls) == 2  # the status callback never came: the operator is free again


def test_two_dispatchers_racing_never_reserve_one_operator_twice(acd_app, fake, db_path):
    """Two workers on two connections, many callers, few operators: one live leg each."""
    app = acd_app(
        operators=[
            {**DEMO_OPERATORS[1], "endpoint": f"+7999111000{n}", "full_name": f"Оператор {n}"}
            for n in range(3)
        ]
    )
    now = datetime.now(UTC)
    with database.connect(db_path) as db, database.write_transaction(db):
        for n in range(12):
            sid = new_sid("CA")
            db.execute(
                "INSERT INTO calls (call_sid, line, started_at, updated_at, step) "
                "VALUES (?, 'domestic', ?, ?, 'queue')",
                [sid, database.timestamp(now), database.timestamp(now)],
            )
            acd_store.enter_queue(
                db,
                {
                    "call_sid": sid,
                    "queue_name": f"call-{sid}",
                    "language": "ru",
                    "entered_at": database.timestamp(now - timedelta(seconds=60 - n)),
                },
            )
    desk = app.extensions["ivr.desk"]
    dispatchers = [Dispatcher(desk, fake), Dispatcher(desk, fake)]
    barrier = threading.Barrier(2)
    reserved: list[dict] = []

    def work(dispatcher):
        db = database.connect(db_path)
        barrier.wait()
        for _ in range(10):
            leg = dispatcher.reserve_next(db)
            if leg:
                reserved.append(leg)

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    operators = [leg["operator_id"] for leg in reserved]
    assert len(operators) == 3 and len(set(operators)) == 3
    callers = [leg["caller_call_sid"] for leg in reserved]
    assert len(set(callers)) == 3
    with database.connect(db_path) as db:
        rows = db.execute(
            "SELECT caller_call_sid FROM operator_legs ORDER BY created_at"
        ).fetchall()
        oldest = db.execute(
            "SELECT call_sid FROM queue_entries ORDER BY entered_at LIMIT 3"
        ).fetchall()
    assert {row[0] for row in rows} == {row[0] for row in oldest}  # longest-waiting first


def test_rest_failures_never_break_the_callers_webhook(acd_app, fake, db_path):
    app = acd_app()
    set_presence(db_path, 1, "away")
    fake.fail_next = 1
    call = queued_caller(app)
    assert not call.result.errors  # the caller's webhooks answered normally
    health = app.test_client().get("/healthz").get_json()["twilio_rest"]
    assert health["failures"] == 1 and health["last_error_call_sid"] == call.result.call_sid
    assert fake.calls == []
    dispatcher = app.extensions["ivr.dispatcher"]
    later = datetime.now(UTC) + timedelta(seconds=3)
    dispatcher.desk.wall_clock._source = lambda: later
    dispatcher.run_once()  # the retry, after its back-off
    assert len(fake.calls) == 1


# The queue's wait URL ----------------------------------------------------------------------


def test_wait_url_tells_position_and_after_the_longest_wait_offers_a_callback(
    acd_app, fake, db_path
):
    app = acd_app(queue_max_wait_seconds=300)
    set_presence(db_path, 1, "away")
    set_presence(db_path, 2, "away")
    call = queued_caller(app)
    assert any("номер в очереди: 1" in heard.text for heard in call.result.heard)
    clock: Clock = app.extensions["ivr.wall_clock"]
    later = datetime.now(UTC) + timedelta(seconds=301)
    clock._source = lambda: later
    call.wait_in_queue()
    assert not call.result.errors  # the wait TwiML passed the strict waitUrl table
    offer = signed_post(
        app, "/twilio/queue/wait?lang=ru", {"CallSid": call.result.call_sid, "QueueTime": "301"}
    ).get_data(as_text=True)
    assert "<Gather" in offer and "нажмите 1" in offer and "/twilio/queue/offer" in offer
    response = signed_post(
        app, "/twilio/queue/offer?lang=ru", {"CallSid": call.result.call_sid, "Digits": "1"}
    )
    assert "<Leave" in response.get_data(as_text=True)
    with database.connect(db_path) as db:
        entry = acd_store.get_entry(db, call.result.call_sid)
        ticket = db.execute(
            "SELECT callback_requested_at FROM tickets WHERE call_sid = ?",
            [call.result.call_sid],
        ).fetchone()
    assert entry["state"] == "left" and ticket[0]
    # The <Enqueue> action then gets QueueResult=leave: the callback promise and goodbye.
    state = call.post(
        f"/twilio/queue?seq={_seq(db_path, call.result.call_sid)}", {"QueueResult": "leave"}
    )
    assert "перезвонит" in state[1]


def _seq(db_path, call_sid):
    with database.connect(db_path) as db:
        return db.execute("SELECT seq FROM calls WHERE call_sid = ?", [call_sid]).fetchone()[0]


# Callbacks from the console ----------------------------------------------------------------


def test_callback_from_the_console_rings_the_operator_then_the_customer(acd_app, fake, db_path):
    from test_console import console_operators, sign_in

    app = acd_app(operators=console_operators(), now=parse_instant("2026-11-26T21:30:00+03:00"))
    call = EmulatedCall(FlaskTransport(app.test_client()), BASE, AUTH_TOKEN)
    call.start().press("1").press("4207315890").press("1").press("2").silence()
    with database.connect(db_path) as db:
        number = db.execute("SELECT number FROM tickets").fetchone()[0]
    client = app.test_client()
    assert sign_in(client).status_code == 302
    page = client.get("/console/callbacks").get_data(as_text=True)
    assert number in page and "+79161234567" not in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post(f"/console/callbacks/{number}/call", data={"csrf_token": token})
    assert response.status_code == 303
    placed = fake.calls[-1]
    leg = leg_of(placed)
    answer = signed_post(
        app, f"/twilio/operator/{leg}", {"CallSid": placed["sid"], "CallStatus": "in-progress"}
    ).get_data(as_text=True)
    assert "<Number>+79161234567</Number>" in answer and 'callerId="' in answer
    signed_post(
        app,
        f"/twilio/operator/{leg}/dialed",
        {"CallSid": placed["sid"], "DialCallStatus": "no-answer"},
    )
    signed_post(
        app,
        f"/twilio/operator-status?leg={leg}",
        {"CallSid": placed["sid"], "CallStatus": "completed"},
    )
    with database.connect(db_path) as db:
        ticket = db.execute("SELECT * FROM tickets WHERE number = ?", [number]).fetchone()
        audit = db.execute("SELECT count(*) FROM audit_log WHERE action = 'callback'").fetchone()
    assert ticket["callback_attempts"] == 1 and ticket["callback_result"] == "no-answer"
    assert audit[0] == 2  # the attempt and its result
    assert "no-answer" in client.get(f"/console/tickets/{number}").get_data(as_text=True)


# SMS ---------------------------------------------------------------------------------------


def test_ticket_by_sms_is_offered_sent_once_and_its_delivery_recorded(acd_app, fake, db_path):
    app = acd_app(sms_from="+12025550199")
    call = EmulatedCall(FlaskTransport(app.test_client()), BASE, AUTH_TOKEN).start().press("0")
    assert "в СМС, нажмите 1" in call.result.transcript
    call.press("1")
    assert "СМС с номером обращения скоро придёт" in call.result.transcript
    assert len(fake.messages) == 1
    message = fake.messages[0]
    assert message["to"] == "+79161234567" and message["from"] == "+12025550199"
    assert "Иванова Мария Сергеевна" in message["body"] and "обращение" in message["body"]
    response = signed_post(
        app, "/twilio/sms-status", {"MessageSid": message["sid"], "MessageStatus": "delivered"}
    )
    assert response.status_code == 204
    with database.connect(db_path) as db:
        row = db.execute("SELECT status FROM sms_messages").fetchone()
    assert row[0] == "delivered"


def test_no_sms_offer_without_sms_from_or_for_a_foreign_number(acd_app, fake):
    app = acd_app()
    call = EmulatedCall(FlaskTransport(app.test_client()), BASE, AUTH_TOKEN).start().press("0")
    assert "СМС" not in call.result.transcript


# Reconciliation ----------------------------------------------------------------------------


def test_reconciliation_records_the_real_final_status(acd_app, fake, db_path):
    app = acd_app()
    call = EmulatedCall(FlaskTransport(app.test_client()), BASE, AUTH_TOKEN).start()
    sid = call.result.call_sid
    fake.statuses[sid] = {"sid": sid, "status": "completed", "duration": "95"}
    with database.connect(db_path) as db, database.write_transaction(db):
        db.execute(
            "UPDATE calls SET started_at = '2026-11-26T08:00:00.000+00:00', ended_at = NULL, "
            "status = 'in-progress' WHERE call_sid = ?",
            [sid],
        )
    dispatcher = app.extensions["ivr.dispatcher"]
    with database.connect(db_path) as db:
        assert dispatcher.reconcile(db) == 1
        row = db.execute("SELECT status, duration, ended_at FROM calls WHERE call_sid = ?", [sid])
        status, duration, ended_at = row.fetchone()
    assert (status, duration) == ("completed", 95) and ended_at


# The command -------------------------------------------------------------------------------


def test_ivr_operators_status_cli(db_path, monkeypatch):
    from ivr.cli import main

    monkeypatch.setenv("IVR_DB", db_path)
    runner = CliRunner()
    assert runner.invoke(main, ["init-db"]).exit_code == 0
    result = runner.invoke(
        main, ["operators", "add", "Иванова Мария Сергеевна", "--endpoint", "+79990000001"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["operators", "status", "1", "away"])
    assert result.exit_code == 0, result.output
    assert "is away" in result.output
    with database.connect(db_path) as db:
        assert db.execute("SELECT presence FROM operators").fetchone()[0] == "away"
        assert (
            db.execute("SELECT count(*) FROM audit_log WHERE action = 'presence'").fetchone()[0]
            == 1
        )
    assert runner.invoke(main, ["operators", "status", "nobody", "away"]).exit_code != 0
    assert runner.invoke(main, ["operators", "status", "1", "lunch"]).exit_code != 0


def test_a_phone_that_rang_in_vain_rests_before_it_is_rung_again(acd_app, fake, db_path):
    app = acd_app()
    set_presence(db_path, 2, "away")  # one operator (Ivanova) to ring
    queued_caller(app, dial_status="no-answer")
    first = fake.calls[0]
    signed_post(
        app,
        f"/twilio/operator-status?leg={leg_of(first)}",
        {"CallSid": first["sid"], "CallStatus": "busy"},
    )
    dispatcher = app.extensions["ivr.dispatcher"]
    dispatcher.run_once()
    assert len(fake.calls) == 1  # not rung again at once, in a loop
    later = datetime.now(UTC) + timedelta(seconds=dispatch.RING_AGAIN_AFTER_SECONDS + 1)
    dispatcher.desk.wall_clock._source = lambda: later
    dispatcher.run_once()
    assert len(fake.calls) == 2 and fake.calls[1]["to"] == first["to"]

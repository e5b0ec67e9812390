"""Crash and restart: `ivr serve` SIGKILLed in the middle of live calls, then started again.

State lives in SQLite, so every call goes on from its last step at its next webhook, nothing
recorded is lost, and no ticket is made twice. Requests in flight when the process dies fail
at the transport level; Twilio then calls the number's fallback URL, and those callers still
leave with a ticket and an operator.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import AUTH_TOKEN, OPEN_NOW
from test_server import free_port, wait_for

from ivr.emulator import EmulatedCall, HttpTransport
from ivr.scenarios import heard_ticket
from ivr.tickets import is_valid_ticket_number

pytestmark = pytest.mark.slow

# The main path, one caller action at a time, and what the IVR says in answer to each.
ACTIONS = (
    (("press", "1"), "десятизначный номер заказа"),
    (("press", "4207315890"), "Вы ввели номер заказа: 4 2 0, 7 3 1, 5 8 9 0"),
    (("press", "1"), "Выберите тему обращения"),
    (("press", "1"), "Номер обращения"),
    (("silence",), "Сейчас вам ответит оператор"),
)
# Where each caller is when the server dies: how many actions are behind them.
STAGES = {
    "main_menu": 0,
    "order_number": 1,  # pressed 1, the IVR waits for the order number
    "confirmation": 2,  # typed the number, the IVR waits for "1 correct / 2 again"
    "category": 3,
    "ticket": 4,  # the ticket exists and was read out; "* repeats" is pending
}
FLOW_KINDS = {"voice", "gather", "dial", "queue", "recorded", "result"}


class Server:
    """`ivr serve` as its own process, on one port and one database across restarts."""

    def __init__(self, tmp_path):
        self.db_path = str(tmp_path / "ivr.sqlite3")
        self.env = {
            **os.environ,
            "IVR_DB": self.db_path,
            "IVR_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "IVR_NOW": OPEN_NOW,
        }
        for name in ("IVR_VOSK_MODEL_RU", "IVR_VOSK_MODEL_EN", "IVR_PUBLIC_URL"):
            self.env.pop(name, None)  # keypad only: the calls must not depend on a model
        subprocess.run(
            [sys.executable, "-m", "ivr.cli", "init-db", "--demo"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ivr.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.base, self.process)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever was in flight is cut off."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    server.start()
    yield server
    if server.process.poll() is None and server.process.pid:
        os.kill(server.process.pid, signal.SIGCONT)  # in case a test left it stopped
    server.stop()


def new_call(server: Server, index: int, **options) -> EmulatedCall:
    return EmulatedCall(
        HttpTransport(), server.base, AUTH_TOKEN, from_=f"+7916555{index:04d}", **options
    )


def act(call: EmulatedCall, action: tuple[str, ...]) -> str:
    """Perform one caller action; returns what the IVR said in answer."""
    start = len(call.result.heard)
    getattr(call, action[0])(*action[1:])
    return "\n".join(item.text for item in call.result.heard[start:] if item.kind == "say")


def snapshot(db_path: str) -> dict:
    """What is on record: the timeline, tickets, call states and stored webhook answers."""
    with sqlite3.connect(db_path) as db:
        return {
            "events": db.execute("SELECT * FROM events ORDER BY id").fetchall(),
            "tickets": db.execute("SELECT * FROM tickets ORDER BY number").fetchall(),
            "calls": {
                row[0]: row[1:] for row in db.execute("SELECT call_sid, seq, step FROM calls")
            },
            "responses": dict(db.execute("SELECT key, twiml FROM webhook_responses").fetchall()),
        }


def assert_kept(before: dict, after: dict) -> None:
    """Nothing recorded before the crash is lost or changed."""
    assert set(before["events"]) <= set(after["events"])
    assert set(before["tickets"]) <= set(after["tickets"])
    assert before["responses"].items() <= after["responses"].items()


def assert_consistent(db_path: str) -> None:
    """No half-written delivery: each call's state, timeline and stored answers agree."""
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        calls = {row["call_sid"]: dict(row) for row in db.execute("SELECT * FROM calls")}
        events = [dict(row) for row in db.execute("SELECT * FROM events ORDER BY id")]
        keys = [row[0] for row in db.execute("SELECT key FROM webhook_responses")]
        tickets = [dict(row) for row in db.execute("SELECT * FROM tickets")]
    for call_sid, call in calls.items():
        mine = [event for event in events if event["call_sid"] == call_sid]
        steps = sorted(event["seq"] for event in mine if event["kind"] == "step")
        # Every delivery that moved the call on wrote exactly one step: no gap, no repeat.
        assert steps == list(range(1, call["seq"] + 1)), (call_sid, steps, call["seq"])
    for key in keys:
        call_sid, kind, seq = key.split(":", 2)
        mine = [event for event in events if event["call_sid"] == call_sid]
        if kind in FLOW_KINDS and seq.isdigit():
            moved_on = any(e["kind"] == "step" and e["seq"] == int(seq) + 1 for e in mine)
            stale = any(
                e["kind"] == "stale_request" and json.loads(e["detail"]).get("seq") == int(seq)
                for e in mine
            )
            assert moved_on or stale, f"answer {key} stored without its events"
        elif kind == "fallback":
            assert any(e["kind"] == "fallback" for e in mine), f"answer {key} without its event"
    for ticket in tickets:
        assert calls[ticket["call_sid"]]["ticket_number"] == ticket["number"]
        assert any(
            e["kind"] == "ticket" and json.loads(e["detail"])["ticket_number"] == ticket["number"]
            for e in events
        )


def assert_ticket_and_operator(call: EmulatedCall, db_path: str) -> str:
    """The caller heard a valid ticket, the same one is on record, and reached an operator."""
    assert call.result.ended and not call.result.errors, call.result.errors
    assert call.result.connected_to or call.result.queue
    told = heard_ticket(call.result)
    assert told and is_valid_ticket_number(told)
    with sqlite3.connect(db_path) as db:
        numbers = [
            row[0]
            for row in db.execute(
                "SELECT number FROM tickets WHERE call_sid = ?", [call.result.call_sid]
            )
        ]
    assert numbers == [told]
    return told


def test_calls_continue_from_their_last_step_after_sigkill(server):
    stages = [stage for stage in STAGES for _ in range(4)]  # 20 calls, 4 at each point
    calls = [new_call(server, index) for index in range(len(stages))]
    for call, stage in zip(calls, stages, strict=True):
        call.start()
        for action, _ in ACTIONS[: STAGES[stage]]:
            act(call, action)
    told_before = {c.result.call_sid: heard_ticket(c.result) for c in calls}
    assert sum(1 for ticket in told_before.values() if ticket) == 4
    before = snapshot(server.db_path)
    assert len(before["calls"]) == 20 and len(before["tickets"]) == 4

    server.kill()
    server.start()  # same port, same database

    after_restart = snapshot(server.db_path)
    assert_kept(before, after_restart)
    assert after_restart["calls"] == before["calls"]  # every call is where it was
    for call, stage in zip(calls, stages, strict=True):
        remaining = ACTIONS[STAGES[stage] :]
        (first, expected), rest = remaining[0], remaining[1:]
        # The next webhook after the restart continues from the call's last step.
        said = act(call, first)
        assert expected in said or call.result.queue, (stage, call.result.transcript)
        for action, expected in rest:
            if not call.result.ended:
                assert expected in act(call, action) or call.result.queue, stage
        if not call.result.ended:
            call.hang_up()  # talking to the operator: the caller hangs up
    after = snapshot(server.db_path)
    assert_kept(before, after)
    told = [assert_ticket_and_operator(call, server.db_path) for call in calls]
    assert len(set(told)) == len(after["tickets"]) == 20  # one ticket per call, all distinct
    for call in calls:  # a ticket read out before the crash is the one the caller keeps
        if told_before[call.result.call_sid]:
            assert heard_ticket(call.result) == told_before[call.result.call_sid]
    assert not any(event[4] == "stale_request" for event in after["events"])
    assert_consistent(server.db_path)


@pytest.mark.parametrize("moment", ["frozen", "racing"])
def test_requests_in_flight_at_sigkill_end_with_ticket_and_operator(server, moment):
    # Callers at the category menu press their key, and the server dies under them.
    # "frozen": the server is stopped first, so each request is surely in flight (accepted
    # by the kernel, unanswered) when SIGKILL lands. "racing": it is killed while it works,
    # so some requests die half-handled, inside their transaction.
    calls = [new_call(server, index, fallback_on_failure=True) for index in range(6)]
    calls += [new_call(server, index) for index in range(6, 12)]  # live, but idle at the kill
    for call in calls:
        call.start()
        for action, _ in ACTIONS[:3]:
            act(call, action)
    in_flight, idle = calls[:6], calls[6:]
    # The test harness waits for the restart: real Twilio tries the fallback URL only once.
    for call in in_flight:
        call.fallback_tries, call.fallback_retry_delay = 80, 0.25
    before = snapshot(server.db_path)

    if moment == "frozen":
        os.kill(server.process.pid, signal.SIGSTOP)
    presses = [threading.Thread(target=call.press, args=("2",)) for call in in_flight]
    for thread in presses:
        thread.start()
    time.sleep(0.5 if moment == "frozen" else 0.005)  # sent; (some) waiting for an answer
    server.kill()
    time.sleep(0.5)  # the callers' requests fail and Twilio turns to the fallback URL
    server.start()
    for thread in presses:
        thread.join(60)
        assert not thread.is_alive()

    fell_back = {
        call.result.call_sid
        for call in in_flight
        if any(item.kind == "fallback" for item in call.result.heard)
    }
    if moment == "frozen":
        assert len(fell_back) == len(in_flight)
    for call in in_flight:
        if call.result.call_sid in fell_back:
            assert "техническая неполадка" in call.result.transcript
        else:  # answered before the kill: the ticket as usual
            assert "Номер обращения" in call.result.transcript
        if not call.result.ended:
            call.silence()  # "* repeats" not used: on to the operator
        if not call.result.ended:
            call.hang_up()
    for call in idle:  # untouched by the crash: they go on normally
        assert "Номер обращения" in act(call, ("press", "2"))
        act(call, ("silence",))
        if not call.result.ended:
            call.hang_up()
    after = snapshot(server.db_path)
    assert_kept(before, after)
    told = [assert_ticket_and_operator(call, server.db_path) for call in calls]
    assert len(set(told)) == len(after["tickets"]) == 12
    with sqlite3.connect(server.db_path) as db:
        fallbacks = {
            row[0] for row in db.execute("SELECT call_sid FROM events WHERE kind = 'fallback'")
        }
    assert fallbacks == fell_back
    print(f"{moment}: {len(fell_back)} of {len(in_flight)} requests cut off by SIGKILL")
    assert_consistent(server.db_path)


def test_callers_waiting_in_the_queue_are_dispatched_after_sigkill(tmp_path):
    """Callers wait in the queue (every operator away); the server is SIGKILLed; the
    operators come back while it is down; after the restart the dispatcher's sweep rings
    them through the REST stand-in and the stand-in's bridge takes every waiting caller."""
    from ivr.emulator import TwilioStandIn

    with TwilioStandIn(auth_token=AUTH_TOKEN, time_scale=0.05) as twilio:
        twilio.default_phone = twilio.set_phone("+79990000001", answer_after=1, talk_seconds=4)
        server = Server(tmp_path)
        server.env.update(
            IVR_TWILIO_ACCOUNT_SID=twilio.account_sid,
            IVR_TWILIO_API_URL=twilio.base_url,
            IVR_PUBLIC_URL=server.base,  # where the stand-in reaches the operators' legs
            IVR_DISPATCH_INTERVAL="0.5",
        )
        presence = "UPDATE operators SET presence = ?"
        with sqlite3.connect(server.db_path) as db:
            db.execute(presence, ["away"])
        server.start()
        try:
            callers = []
            for index in range(3):
                call = new_call(
                    server,
                    index,
                    dial_status="no-answer",
                    account_sid=twilio.account_sid,
                    twilio=twilio,
                )
                call.start().press("0").silence()
                assert call.in_queue, call.result.transcript
                callers.append(call)
            time.sleep(1.0)  # a few sweeps: nobody to ring
            assert twilio.calls == {}
            server.kill()
            with sqlite3.connect(server.db_path) as db:
                waiting = db.execute(
                    "SELECT count(*) FROM queue_entries WHERE state = 'waiting'"
                ).fetchone()[0]
                db.execute(presence, ["available"])  # back while the server is down
            assert waiting == 3
            server.start()
            results = {}
            threads = [
                threading.Thread(target=lambda c=c: results.update({c: c.wait_for_operator(20)}))
                for c in callers
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert all(results.get(call) for call in callers), [
                call.result.transcript for call in callers
            ]
            rung = {leg.to for leg in twilio.calls.values()}
            assert len(rung) == 3  # three operators, one caller each
            with sqlite3.connect(server.db_path) as db:
                states = [row[0] for row in db.execute("SELECT state FROM queue_entries")]
            assert states == ["bridged"] * 3
        finally:
            server.stop()

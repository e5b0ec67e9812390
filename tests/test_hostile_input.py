"""Hostile input (issue 6, promise 5): every webhook, validly signed, fed arbitrary forms.

Hypothesis posts to every webhook route with a valid X-Twilio-Signature (computed with
twilio's RequestValidator for the exact URL, query included, as Twilio signs it) and
arbitrary form fields: any types, lengths and unicode (NUL, right-to-left marks, emoji,
digits from other scripts, very long values), missing fields, duplicated and extra fields,
random query strings and step names. Whatever arrives:

- the answer is 2xx or 4xx, never a 5xx, and never a stack trace or exception text;
- a TwiML answer parses as XML;
- the catch-all error handler is never reached (hostile input is refused or handled, not
  survived by accident: an apology + queue would hide a bug);
- nothing is written outside the posted call's own records: all tables are compared
  before and after, and every new or changed row must belong to the posted CallSid.

Real app, real SQLite file (one per module, with a few calls already in it), the Flask
test client (no server needed for what is tested here); oversized bodies are also sent
over real HTTP to the real WSGI server.
"""

from __future__ import annotations

import io
import logging
import socket
import sqlite3
import string
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections import Counter

import pytest
from conftest import AUTH_TOKEN, INTERNATIONAL, OPEN_NOW, add_operators
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from ivr import db as database
from ivr import flow
from ivr.db import speech as speech_store
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, FlaskTransport, new_sid, sign
from ivr.hours import parse_instant
from ivr.speech.recordings import RecordingFetcher
from ivr.web.app import create_app

BASE = "http://localhost"
EXAMPLES = 120  # per route: the module runs in about 20 s
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# What rows of each table belong to: a webhook may only touch rows of its own call.
OWNED_BY_CALL = {
    "calls": "call_sid",
    "events": "call_sid",
    "tickets": "call_sid",
    "webhook_responses": "call_sid",
    "recordings": "call_sid",
    "recognitions": "call_sid",
    "queue_entries": "call_sid",
    "sms_messages": "call_sid",
}
# Log messages that mean "an unexpected exception was caught": hostile input must not get there.
CAUGHT_CRASHES = (
    "webhook failed; answering with the safe fallback",
    "fallback failed; queueing the caller",
    "recognition failed",
)
LEAKS = ("Traceback", 'File "', "Error:", "Exception", "sqlite3", "werkzeug", "/ivr/")


class ErrorRecorder(logging.Handler):
    """Keeps the service's error log records (to spot the catch-all being used)."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One app and database for the module, with calls of every kind already in it."""
    folder = tmp_path_factory.mktemp("hostile")
    db_path = str(folder / "ivr.sqlite3")
    app = create_app(
        {
            "db_path": db_path,
            "auth_token": AUTH_TOKEN,
            "now": parse_instant(OPEN_NOW),
            "allow_simulated_time": True,  # fuzz ?simulated_now= too (emulator runs allow it)
            "recording_hosts": ("media.invalid",),  # no fuzzed URL may reach the network
            "recordings_dir": str(folder / "recordings"),
        }
    )
    add_operators(db_path)
    speech = app.extensions["ivr.speech"]
    # A real fetcher without retry waits, so refused/failed fetches finish at once.
    speech.fetcher = RecordingFetcher.from_settings(
        app.extensions["ivr.settings"], retry_delays=(), timeout=1.0
    )
    jobs = []
    original_start = speech.start

    def start_and_remember(*args, **kwargs):
        job = original_start(*args, **kwargs)
        jobs.append(job)
        return job

    speech.start = start_and_remember  # so each example can wait for its background job

    transport = FlaskTransport(app.test_client())

    def emulated(**kwargs) -> EmulatedCall:
        return EmulatedCall(transport, BASE, AUTH_TOKEN, **kwargs).start()

    calls = {
        "in_menu": emulated(),
        "ended_with_ticket": emulated().press("0").silence(),
        "at_order_number": emulated().press("1"),
        "language_menu": emulated(to=INTERNATIONAL),
        "at_category": emulated().press("1").press("4207315890").press("1"),
    }
    call_sids = [call.result.call_sid for call in calls.values()]
    # Recordings and recognitions of an earlier call, for fuzzed webhooks to try to touch.
    recording_sids = [new_sid("RE"), new_sid("RE")]
    owner = calls["ended_with_ticket"].result.call_sid
    with database.connect(db_path) as db, database.write_transaction(db):
        for index, sid in enumerate(recording_sids):
            speech_store.insert_recording_once(
                db,
                {
                    "sid": sid,
                    "call_sid": owner,
                    "purpose": "order_number",
                    "url": f"https://api.twilio.com/2010-04-01/Accounts/{new_sid('AC')}"
                    f"/Recordings/{sid}",
                    "status": "pending" if index else "stored",
                    "created_at": "2026-11-26T09:00:00.000+00:00",
                    "updated_at": "2026-11-26T09:00:00.000+00:00",
                },
            )
            speech_store.add_pending_recognition(
                db,
                {
                    "call_sid": owner,
                    "recording_sid": sid,
                    "purpose": "order_number",
                    "language": "ru",
                    "status": "pending" if index else "done",
                    "created_at": "2026-11-26T09:00:00.000+00:00",
                },
            )
    errors = ErrorRecorder()
    logging.getLogger("ivr").addHandler(errors)
    yield {
        "app": app,
        "client": app.test_client(),
        "db_path": db_path,
        "call_sids": call_sids,
        "recording_sids": recording_sids,
        "jobs": jobs,
        "errors": errors,
        "answers": Counter(),
    }
    logging.getLogger("ivr").removeHandler(errors)
    speech.close()


# Strategies ------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
NASTY = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "1\x00",
        "\n",
        "1\n",
        "\u202e\u0627\u0644\u0633\u0644\u0627\u0645",  # right-to-left override + Arabic
        "\u200f\u05e9\u05dc\u05d5\u05dd",
        "😀🙈👨‍👩‍👧‍👦",
        "²",
        "١٢",
        "１２",
        "-1",
        "+1",
        "1e9",
        "0x1f",
        "NaN",
        "9" * 40,
        "<Say>hi</Say>",
        "]]><Hangup/>",
        "'; DROP TABLE calls; --",
        "%00",
        "../../../etc/passwd",
        "completed",
        "absent",
        "failed",
        "in-progress",
        "bridged",
        "hangup",
        "no-answer",
        "*#*#",
        "0",
        "1",
        "4207315890",
        "ru",
        "en",
    ]
)
NUMBERISH = st.one_of(
    st.sampled_from(["²", "①", "١٢", "１２", "Ⅻ", "½", "007", "1.5", " 1", "1_000", "-0"]),
    st.text(st.characters(whitelist_categories=("Nd", "No")), min_size=1, max_size=4),
)
LONG_TEXT = ANY_TEXT.filter(bool).map(lambda text: (text * 400)[:4000])


@st.composite
def hostile_value(draw) -> str:
    """Mostly short nasty or random text; sometimes odd numbers; now and then far too long."""
    kind = draw(st.integers(0, 19))
    if kind < 7:
        return draw(NASTY)
    if kind < 13:
        return draw(ANY_TEXT)
    if kind < 16:
        return draw(NUMBERISH)
    if kind < 18:
        return str(draw(st.integers()))
    return draw(LONG_TEXT)


VALUE = hostile_value()
TWILIO_FIELDS = (
    "AccountSid",
    "From",
    "To",
    "Caller",
    "Called",
    "CallStatus",
    "CallDuration",
    "Direction",
    "ApiVersion",
    "Digits",
    "FinishedOnKey",
    "DialCallStatus",
    "DialCallDuration",
    "DialCallSid",
    "QueueResult",
    "QueueTime",
    "QueuePosition",
    "RecordingSid",
    "RecordingUrl",
    "RecordingStatus",
    "RecordingDuration",
    "ErrorCode",
    "ErrorUrl",
)
ROUTE_FIELDS = {
    "voice": ("From", "To", "CallStatus", "AccountSid"),
    "gather": ("Digits",),
    "dial": ("DialCallStatus", "DialCallDuration"),
    "queue": ("QueueResult", "QueueTime"),
    "queue/wait": ("QueuePosition",),
    "recorded": ("RecordingSid", "RecordingUrl", "RecordingDuration"),
    "recording-status": ("RecordingSid", "RecordingUrl", "RecordingStatus", "RecordingDuration"),
    "status": ("CallStatus", "CallDuration", "From", "To"),
    "fallback": ("ErrorCode", "ErrorUrl"),
}
NUMERIC_FIELDS = {
    "CallDuration",
    "DialCallDuration",
    "QueueTime",
    "QueuePosition",
    "RecordingDuration",
}
CALL_STATUSES = ("ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled")
STEP_NAMES = sorted(
    {*flow.INPUT_STEPS, *flow.RECORD_STEPS, *flow.WAIT_STEPS, *flow.CONNECT_STEPS, "ended", "start"}
)
SIDS = st.binary(min_size=16, max_size=16).map(bytes.hex)
URL_SAFE = string.ascii_letters + string.digits + "-._~"


def _recording_url(sid: str) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{new_sid('AC')}/Recordings/{sid}"


@st.composite
def webhook_request(draw, route: str, call_sids: list[str], recording_sids: list[str]):
    """(path with query, form as a MultiDict, the CallSid posted or None).

    A well-formed Twilio request for the route, then some of its fields and query
    parameters replaced by hostile values or dropped, and random fields added: so that
    most requests get past the first check and the hostile part reaches the handler.
    """
    call_sid = draw(
        st.one_of(
            st.sampled_from(call_sids),
            st.sampled_from(call_sids),
            st.sampled_from(call_sids),
            SIDS.map(lambda digits: "CA" + digits),
            SIDS.map(lambda digits: "CA" + digits.upper()),
        )
    )
    fresh_recording = SIDS.map(lambda digits: "RE" + digits)
    recording_sid = draw(
        st.one_of(st.sampled_from(recording_sids), fresh_recording, fresh_recording)
    )
    fields = {
        "CallSid": call_sid,
        "AccountSid": "AC" + draw(SIDS),
        "From": draw(st.sampled_from(["+79161234567", "+15005550006", "anonymous", ""])),
        "To": draw(st.sampled_from(["+78002345555", INTERNATIONAL, "+15005550006"])),
        "CallStatus": draw(st.sampled_from(CALL_STATUSES)),
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }
    if route == "gather":
        fields["Digits"] = draw(st.sampled_from(["", "1", "2", "0", "*", "#", "4207315890"]))
    elif route == "dial":
        fields["DialCallStatus"] = draw(st.sampled_from(["completed", "busy", "no-answer"]))
        fields["DialCallDuration"] = str(draw(st.integers(0, 100)))
    elif route == "queue":
        fields["QueueResult"] = draw(st.sampled_from(["bridged", "hangup", "leave", "error"]))
        fields["QueueTime"] = str(draw(st.integers(0, 100)))
    elif route == "queue/wait":
        fields["QueuePosition"] = str(draw(st.integers(0, 100)))
    elif route in ("recorded", "recording-status"):
        fields["RecordingSid"] = recording_sid
        fields["RecordingUrl"] = draw(
            st.sampled_from(
                [
                    _recording_url(recording_sid),
                    f"http://127.0.0.1:9/2010-04-01/Accounts/AC{'0' * 32}"
                    f"/Recordings/{recording_sid}",
                    f"https://user:pw@api.twilio.com/2010-04-01/Recordings/{recording_sid}",
                    "file:///etc/passwd",
                    "gopher://127.0.0.1:25/",
                    "http://[::1]/",
                    "http://2130706433/",
                ]
            )
        )
        fields["RecordingDuration"] = str(draw(st.integers(0, 60)))
        fields["RecordingStatus"] = draw(st.sampled_from(["completed", "absent", "failed"]))
    elif route == "status":
        fields["CallDuration"] = str(draw(st.integers(0, 3600)))
    elif route == "fallback":
        fields["ErrorCode"] = draw(st.sampled_from(["11200", "11205", "12100"]))
        fields["ErrorUrl"] = BASE + "/twilio/gather/main_menu?seq=1"
    step = draw(st.sampled_from(STEP_NAMES))
    query = {}
    if route in ("gather", "dial", "queue", "recorded", "result"):
        query["seq"] = str(draw(st.integers(0, 12)))
    if route == "recording-status":
        query["purpose"] = draw(st.sampled_from(["order_number", "description", "confirm"]))
    if route in ("recording-status", "queue/wait"):
        query["lang"] = draw(st.sampled_from(["ru", "en", "de"]))

    # The hostile part: a few fields, query parameters or the step name replaced by hostile
    # values or dropped (none at all in some requests, so valid ones are in the mix too).
    targets = sorted({*fields, *ROUTE_FIELDS.get(route, ())}) + [f"?{name}" for name in query]
    if route in ("gather", "recorded", "result"):
        targets.append("<step>")
    for target in draw(st.lists(st.sampled_from(targets), max_size=3, unique=True)):
        if target == "<step>":
            step = draw(
                st.one_of(
                    st.text(URL_SAFE, min_size=1, max_size=40),
                    ANY_TEXT.filter(bool).map(lambda text: urllib.parse.quote(text, safe="")),
                )
            )
            continue
        name = target.removeprefix("?")
        numeric = name in NUMERIC_FIELDS or name == "seq"
        replacement = draw(
            st.one_of(NUMBERISH, st.none()) if numeric else st.one_of(VALUE, st.none())
        )
        where = query if target.startswith("?") else fields
        if replacement is None:
            where.pop(name, None)
        else:
            where[name] = replacement
    fields.update(draw(st.dictionaries(st.sampled_from(TWILIO_FIELDS), VALUE, max_size=1)))
    form = MultiDict(list(fields.items()))
    for name, value in draw(st.lists(st.tuples(ANY_TEXT, VALUE), max_size=2)):
        form.add(name, value)  # random extra (and repeated) fields
    if draw(st.integers(0, 9)) == 0:
        form.add("CallSid", draw(st.sampled_from(call_sids)))  # a second CallSid
    query = MultiDict(list(query.items()))
    if route == "voice" and draw(st.integers(0, 3)) == 0:
        instant = st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat())
        query.add("simulated_now", draw(st.one_of(instant, VALUE)))
    for name, value in draw(st.lists(st.tuples(ANY_TEXT, VALUE), max_size=2)):
        query.add(name, value)

    path = {
        "gather": f"/twilio/gather/{step}",
        "recorded": f"/twilio/recorded/{step}",
        "result": f"/twilio/result/{step}",
    }.get(route, f"/twilio/{route}")
    text = urllib.parse.urlencode(list(query.items(multi=True)))
    if text:
        path += "?" + text
    return path, form, form.get("CallSid")


ROUTES = (
    "voice",
    "gather",
    "dial",
    "queue",
    "queue/wait",
    "recorded",
    "result",
    "recording-status",
    "status",
    "fallback",
)


# Checking one answer ---------------------------------------------------------------------


def snapshot(db_path: str) -> dict[str, tuple[list[str], dict[int, tuple]]]:
    """Every row of every table, by rowid, with the column names.

    Full-text indexes (virtual tables and their shadow tables) mirror tables read here.
    """
    connection = sqlite3.connect(db_path)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"
            )
        ]
        result = {}
        for table in tables:
            cursor = connection.execute(f"SELECT rowid, * FROM [{table}]")  # noqa: S608
            columns = [item[0] for item in cursor.description]
            result[table] = (columns, {row[0]: row for row in cursor})
        return result
    finally:
        connection.close()


def foreign_writes(before, after, call_sid: str | None) -> list[str]:
    """Rows added, changed or removed that do not belong to the posted call."""
    problems = []
    for table, (columns, new_rows) in after.items():
        old_rows = before.get(table, (columns, {}))[1]
        owner_column = OWNED_BY_CALL.get(table)
        for rowid in set(old_rows) | set(new_rows):
            old, new = old_rows.get(rowid), new_rows.get(rowid)
            if old == new:
                continue
            if owner_column is None:
                problems.append(f"{table} row {rowid} written: {old} -> {new}")
                continue
            index = columns.index(owner_column)
            owners = {row[index] for row in (old, new) if row is not None}
            if call_sid is None or owners != {call_sid}:
                problems.append(f"{table} row {rowid} of {owners} written for {call_sid!r}")
    return problems


def check_answer(response) -> None:
    body = response.get_data(as_text=True)
    assert 200 <= response.status_code < 500, (response.status_code, body[:500])
    for leak in LEAKS:
        assert leak not in body, body[:2000]
    if response.mimetype == "application/xml" and body:
        root = ElementTree.fromstring(body)  # noqa: S314 - our own answer
        assert root.tag == "Response"


@pytest.mark.parametrize("route", ROUTES)
def test_every_webhook_survives_arbitrary_signed_forms(hostile, route):
    @HYPOTHESIS
    @given(request=webhook_request(route, hostile["call_sids"], hostile["recording_sids"]))
    def post_one(request):
        path, form, call_sid = request
        before = snapshot(hostile["db_path"])
        seen_errors = len(hostile["errors"].records)
        headers = {
            "X-Twilio-Signature": sign(AUTH_TOKEN, BASE + path, form),
            "I-Twilio-Idempotency-Token": new_sid("ID"),
        }
        response = hostile["client"].post(path, data=form, headers=headers, base_url=BASE)
        for job in hostile["jobs"]:
            job.result(timeout=30)  # a fetch started by this request has stored its result
        hostile["jobs"].clear()
        check_answer(response)
        hostile["answers"][route, response.status_code // 100] += 1
        crashes = [
            record.getMessage()
            for record in hostile["errors"].records[seen_errors:]
            if record.getMessage() in CAUGHT_CRASHES
        ]
        assert not crashes, (crashes, hostile["errors"].records[-1].__dict__)
        assert foreign_writes(before, snapshot(hostile["db_path"]), call_sid) == []

    post_one()


def test_the_fuzzing_reached_the_handlers(hostile):
    """The properties above are not vacuous: signed fuzz requests did get through.

    (Runs after the fuzz tests above, in file order.)
    """
    answered = {route: hostile["answers"][route, 2] for route in ROUTES}
    assert all(count >= 5 for count in answered.values()), hostile["answers"]
    with database.connect(hostile["db_path"]) as db:
        calls = db.execute("SELECT count(*) FROM calls").fetchone()[0]
        events = {row[0] for row in db.execute("SELECT DISTINCT kind FROM events")}
    assert calls > len(hostile["call_sids"]) + 5
    assert {"stale_request", "status", "input", "recording_status", "fallback"} <= events


# Oversized bodies ------------------------------------------------------------------------


class WatchedBody(io.BytesIO):
    """A request body that counts the attempts to read it."""

    def __init__(self, size: int):
        super().__init__(b"x" * size)
        self.reads = 0

    def read(self, *args):
        self.reads += 1
        return super().read(*args)

    def readline(self, *args):
        self.reads += 1
        return super().readline(*args)

    def readinto(self, buffer):
        self.reads += 1
        return super().readinto(buffer)


@pytest.mark.parametrize("route", ["/twilio/voice", "/twilio/gather/main_menu?seq=1"])
def test_oversized_body_is_refused_before_it_is_read(hostile, route):
    limit = hostile["app"].extensions["ivr.settings"].max_request_bytes
    body = WatchedBody(limit + 1)
    before = snapshot(hostile["db_path"])
    response = hostile["client"].post(
        route,
        input_stream=body,
        content_length=limit + 1,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": "anything"},
        base_url=BASE,
    )
    assert response.status_code == 413
    assert body.reads == 0
    assert foreign_writes(before, snapshot(hostile["db_path"]), None) == []


def test_oversized_body_is_refused_by_the_real_server_without_reading_it(tmp_path):
    """Over real HTTP: only the headers are sent, and the 413 comes back at once."""
    with LocalServer(db_path=str(tmp_path / "ivr.sqlite3")) as server:
        limit = server.app.extensions["ivr.settings"].max_request_bytes
        with socket.create_connection(("127.0.0.1", server.server.effective_port), 5) as sock:
            sock.sendall(
                (
                    "POST /twilio/voice HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    f"X-Twilio-Signature: x\r\nContent-Length: {limit * 100}\r\n\r\n"
                ).encode()
            )
            sock.sendall(b"CallSid=CA")  # a few bytes of a body far too big to wait for
            answer = sock.recv(4096).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer
        with database.connect(server.db_path) as db:
            assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 0

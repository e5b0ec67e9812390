"""Security (issue 6, promise 6): signatures, the reverse proxy, replays, SSRF, masked logs.

Real components throughout: the app on a real SQLite file, real HTTP on loopback to the
real WSGI server where the transport matters (proxy headers, Host), the Twilio emulator
for whole calls, and real HTTP servers standing in for the recording host and for an
"internal" host a forged RecordingUrl must never reach. Where speech is involved the
recogniser's output is SCRIPTED (ScriptedEngine from test_speech_flow, not real decoding):
what is under test here is which URLs are fetched, not what is heard.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import sqlite3
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import AUTH_TOKEN, CALLER, DOMESTIC, OPEN_NOW
from test_speech_flow import RewrittenMedia, ScriptedEngine

from ivr import db as database
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, FlaskTransport, HttpTransport, new_sid, sign
from ivr.hours import parse_instant
from ivr.logs import JsonFormatter

AUDIO = Path(__file__).parent / "fixtures" / "audio"
NOON = "2026-11-26T12:00:00+03:00"
PUBLIC_URL = "https://ivr.example.ru"
NOT_RECOGNISED = "Не удалось разобрать номер заказа"
ROOT = Path(__file__).resolve().parent.parent

# Every webhook route, with the query its TwiML link would carry.
ROUTES = [
    "/twilio/voice",
    "/twilio/gather/main_menu?seq=1",
    "/twilio/dial?seq=1",
    "/twilio/queue?seq=1",
    "/twilio/queue/wait?lang=ru",
    "/twilio/recorded/order_speech?seq=1",
    "/twilio/result/order_wait?seq=1",
    "/twilio/recording-status?purpose=order_number&lang=ru",
    "/twilio/status",
    "/twilio/fallback",
]


def all_rows(db_path: str) -> dict[str, list[tuple]]:
    """Every row of every table (to prove that nothing at all was written)."""
    connection = sqlite3.connect(db_path)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
                "AND name NOT LIKE 'sqlite_%'"  # full-text indexes mirror the tables read here
            )
        ]
        return {
            table: connection.execute(f"SELECT rowid, * FROM [{table}] ORDER BY rowid").fetchall()  # noqa: S608
            for table in tables
        }
    finally:
        connection.close()


def twilio_params(call_sid: str, **extra: str) -> dict[str, str]:
    """What Twilio posts with a webhook of a live call, plus route-specific fields."""
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "5" * 32,
        "From": CALLER,
        "To": DOMESTIC,
        "CallStatus": "in-progress",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
        "Digits": "1",
        "DialCallStatus": "completed",
        "QueueResult": "bridged",
        "QueuePosition": "1",
        "RecordingSid": "RE" + "6" * 32,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/AC{'5' * 32}"
        f"/Recordings/RE{'6' * 32}",
        "RecordingStatus": "completed",
        "RecordingDuration": "4",
        "ErrorCode": "11200",
        "ErrorUrl": "http://localhost/twilio/gather/main_menu?seq=1",
        **extra,
    }


# Signatures ------------------------------------------------------------------------------


@pytest.fixture
def live_call(app, db_path):
    """An app with one call waiting at the main menu (so a forged request could touch it)."""
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN)
    call.start()
    assert call.waiting_for == "Gather"
    return call.result.call_sid


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "forgery",
    [
        "missing",
        "empty",
        "wrong_token",
        "param_changed",
        "param_added",
        "query_changed",
        "other_path",
        "garbage",
    ],
)
def test_every_webhook_refuses_a_missing_or_invalid_signature(
    app, db_path, live_call, route, forgery
):
    params = twilio_params(live_call)
    url = "http://localhost" + route
    signature = sign(AUTH_TOKEN, url, params)
    if forgery == "missing":
        signature = None
    elif forgery == "empty":
        signature = ""
    elif forgery == "wrong_token":
        signature = sign("not-the-auth-token", url, params)
    elif forgery == "param_changed":
        params = {**params, "Digits": "0", "CallStatus": "completed"}
    elif forgery == "param_added":
        params = {**params, "Extra": "1"}
    elif forgery == "query_changed":
        route = route.replace("seq=1", "seq=2") if "seq=" in route else route + "?x=1"
    elif forgery == "other_path":
        signature = sign(AUTH_TOKEN, "http://localhost/twilio/other", params)
    else:
        signature = "A" * 28
    before = all_rows(db_path)
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    response = app.test_client().post(
        route, data=params, headers=headers, base_url="http://localhost"
    )
    assert response.status_code == 403
    assert all_rows(db_path) == before


@pytest.mark.parametrize("route", ROUTES)
def test_every_webhook_is_refused_when_no_auth_token_is_configured(make_app, db_path, route):
    app = make_app(auth_token="")
    params = twilio_params(new_sid("CA"))
    before = all_rows(db_path)
    response = app.test_client().post(
        route,
        data=params,
        headers={"X-Twilio-Signature": sign("", "http://localhost" + route, params)},
        base_url="http://localhost",
    )
    assert response.status_code == 403 and all_rows(db_path) == before


# Behind a reverse proxy (real HTTP) ------------------------------------------------------


def raw_post(port: int, path: str, params: dict, headers: dict[str, str]) -> tuple[int, str]:
    """POST over a raw socket, so the Host and X-Forwarded-* headers are exactly as given."""
    body = urllib.parse.urlencode(params).encode()
    lines = [f"POST {path} HTTP/1.1", "Connection: close", f"Content-Length: {len(body)}"]
    lines.append("Content-Type: application/x-www-form-urlencoded")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, content = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), content.decode(errors="replace")


@pytest.fixture
def proxied(tmp_path):
    """The app on waitress, configured as if behind a TLS-terminating proxy (open hours)."""
    with LocalServer(
        db_path=str(tmp_path / "ivr.sqlite3"),
        auth_token=AUTH_TOKEN,
        public_url=PUBLIC_URL,
        now=parse_instant(OPEN_NOW),
    ) as server:
        yield server


def _forwarded(host: str = "ivr.example.ru", port: int | None = None) -> dict[str, str]:
    return {
        "Host": f"127.0.0.1:{port}" if port else host,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": host,
        "X-Forwarded-For": "54.172.60.1",
    }


def test_behind_a_proxy_a_request_signed_for_the_public_url_is_accepted(proxied):
    port = proxied.server.effective_port
    params = twilio_params(new_sid("CA"), CallStatus="ringing")
    signature = sign(AUTH_TOKEN, PUBLIC_URL + "/twilio/voice", params)
    status, body = raw_post(
        port, "/twilio/voice", params, {**_forwarded(port=port), "X-Twilio-Signature": signature}
    )
    assert status == 200 and "/twilio/gather/main_menu?seq=1" in body
    # The next step, signed for the public URL with its query, continues the call.
    press = {**params, "CallStatus": "in-progress", "Digits": "0"}
    signature = sign(AUTH_TOKEN, PUBLIC_URL + "/twilio/gather/main_menu?seq=1", press)
    status, body = raw_post(
        port,
        "/twilio/gather/main_menu?seq=1",
        press,
        {**_forwarded(port=port), "X-Twilio-Signature": signature},
    )
    assert status == 200 and "Номер обращения" in body
    with database.connect(proxied.db_path) as db:
        assert ticket_store.ticket_for_call(db, params["CallSid"]) is not None


@pytest.mark.parametrize(
    "signed_for, headers",
    [
        # What the app itself sees (the internal URL): not what Twilio signed.
        ("http://127.0.0.1:{port}/twilio/voice", {}),
        ("http://127.0.0.1:{port}/twilio/voice", {"X-Forwarded-Proto": "http"}),
        # Signed for another host, with every header claiming that host.
        (
            "https://evil.example.com/twilio/voice",
            {"Host": "evil.example.com", "X-Forwarded-Host": "evil.example.com"},
        ),
        (
            "https://evil.example.com/twilio/voice",
            {"X-Forwarded-Host": "evil.example.com", "Forwarded": "host=evil.example.com"},
        ),
        # The public host over plain http, or on another port.
        ("http://ivr.example.ru/twilio/voice", {"X-Forwarded-Proto": "http"}),
        ("https://ivr.example.ru:8443/twilio/voice", {"X-Forwarded-Port": "8443"}),
    ],
)
def test_behind_a_proxy_other_urls_and_forged_forwarded_headers_are_refused(
    proxied, signed_for, headers
):
    port = proxied.server.effective_port
    params = twilio_params(new_sid("CA"), CallStatus="ringing")
    signature = sign(AUTH_TOKEN, signed_for.format(port=port), params)
    before = all_rows(proxied.db_path)
    status, _ = raw_post(
        port,
        "/twilio/voice",
        params,
        {**_forwarded(port=port), **headers, "X-Twilio-Signature": signature},
    )
    assert status == 403
    assert all_rows(proxied.db_path) == before


@pytest.mark.parametrize("host", ["localhost:99999", "localhost:abc", "[::1", "a b"])
def test_a_host_header_that_is_no_url_gets_403_not_an_answer(tmp_path, host):
    """Without IVR_PUBLIC_URL the URL is built from Host: one that does not parse is refused."""
    with LocalServer(db_path=str(tmp_path / "ivr.sqlite3"), auth_token=AUTH_TOKEN) as server:
        port = server.server.effective_port
        params = twilio_params(new_sid("CA"), CallStatus="ringing")
        for signature in (sign(AUTH_TOKEN, f"http://{host}/twilio/voice", params), "forged"):
            status, body = raw_post(
                port, "/twilio/voice", params, {"Host": host, "X-Twilio-Signature": signature}
            )
            assert status in (400, 403), body
            assert "<Response>" not in body
        with database.connect(server.db_path) as db:
            assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 0


# Replays ---------------------------------------------------------------------------------


class RecordingTransport(HttpTransport):
    """Real HTTP that keeps every request and its answer (to replay them later)."""

    def __init__(self):
        super().__init__()
        self.sent: list[tuple[str, dict, dict, tuple[int, str]]] = []
        self.lock = threading.Lock()

    def post(self, url, params, headers):
        answer = super().post(url, params, headers)
        with self.lock:
            self.sent.append((url, dict(params), dict(headers), answer))
        return answer


def _wait_for_recognitions(db_path: str, call_sid: str, count: int, timeout: float = 10.0):
    import time

    deadline = time.monotonic() + timeout
    with database.connect(db_path) as db:
        while time.monotonic() < deadline:
            rows = speech_store.call_recognitions(db, call_sid)
            if len(rows) >= count and all(row["status"] == "done" for row in rows):
                return rows
            time.sleep(0.05)
    raise AssertionError(f"recognitions of {call_sid} not done in {timeout} s")


def test_replaying_every_request_of_a_whole_call_creates_nothing(speech_server, media):
    """Each signed request of a complete call (speech, ticket, fallback, dial, status) is
    replayed as is, with a new idempotency token and with none: same answers, no new rows."""
    engine = ScriptedEngine("4 2 0 7 3 1 5 8 9 0", "посылка не пришла")
    server = speech_server(engine)
    transport = RecordingTransport()
    call = EmulatedCall(transport, server.base_url, server.auth_token, at=NOON, media=media)
    call.start().press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    assert "Вы назвали номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in call.result.transcript
    call.press("1").press("1").speak(AUDIO / "ru_problem.wav")
    assert "Номер обращения" in call.result.transcript
    call.fallback()  # Twilio could not use an answer: the fallback URL, mid-call
    call.silence()  # connected to the operator; the call ends, status callback
    call.wait_for_callbacks()
    _wait_for_recognitions(server.db_path, call.result.call_sid, 2)
    assert call.result.end == "connected" and not call.result.errors
    kinds = {urllib.parse.urlsplit(url).path.split("/")[2] for url, *_ in transport.sent}
    assert kinds >= {"voice", "gather", "recorded", "result", "recording-status", "fallback"}
    assert kinds >= {"dial", "status"}
    before = all_rows(server.db_path)
    replay = HttpTransport()
    for url, params, headers, (status, body) in list(transport.sent):
        token = headers.pop("I-Twilio-Idempotency-Token")
        for extra in (
            {"I-Twilio-Idempotency-Token": token},
            {},
            {"I-Twilio-Idempotency-Token": "new"},
        ):
            assert replay.post(url, params, {**headers, **extra}) == (status, body), url
    assert all_rows(server.db_path) == before
    assert engine.calls and len(engine.calls) == 2  # nothing recognised twice
    with database.connect(server.db_path) as db:
        assert db.execute("SELECT count(*) FROM tickets").fetchone()[0] == 1


# The recording fetcher cannot be pointed elsewhere (SSRF), through the webhooks ----------


class Canary:
    """An HTTP server that must never be reached; it counts every request that does."""

    def __init__(self, redirect_to: str | None = None):
        self.requests: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                canary.requests.append(self.path)
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to + self.path)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canary():
    server = Canary()
    yield server
    server.close()


@pytest.mark.parametrize("attack", ["other_port", "other_host", "userinfo", "redirect"])
def test_a_recording_url_cannot_point_the_fetcher_elsewhere(speech_server, media, canary, attack):
    media_port = int(media.base_url.rsplit(":", 1)[1])
    allowed = f"127.0.0.1:{media_port}"
    redirector = None
    if attack == "redirect":
        # The allowed host itself answers with a redirect to the canary.
        redirector = Canary(redirect_to=f"http://127.0.0.1:{canary.port}")
        allowed = f"127.0.0.1:{redirector.port}"
    rewrite = {
        "other_port": lambda url: url.replace(f":{media_port}/", f":{canary.port}/"),
        "other_host": lambda url: url.replace(
            f"127.0.0.1:{media_port}", f"localhost:{canary.port}"
        ),
        "userinfo": lambda url: url.replace(
            f"127.0.0.1:{media_port}", f"user:pw@127.0.0.1:{media_port}"
        ),
        "redirect": lambda url: url.replace(f":{media_port}/", f":{redirector.port}/"),
    }[attack]
    engine = ScriptedEngine("4 2 0 7 3 1 5 8 9 0")
    server = speech_server(engine, recording_hosts=(allowed,))
    try:
        call = EmulatedCall(
            HttpTransport(),
            server.base_url,
            server.auth_token,
            at=NOON,
            media=RewrittenMedia(media, rewrite),
        ).start()
        call.press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
        call.wait_for_callbacks()
        assert NOT_RECOGNISED in call.result.transcript  # the caller is asked again...
        assert call.waiting_for == "Gather"
        call.press("4207315890")  # ...and the keypad still works
        assert "Вы ввели номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in call.result.transcript
        [recognition] = _wait_for_recognitions(server.db_path, call.result.call_sid, 1)
    finally:
        if redirector:
            redirector.close()
    assert (recognition["ok"], recognition["reason"]) == (0, "fetch_not_allowed")
    assert canary.requests == []  # nothing ever reached the other host
    assert engine.calls == []
    if attack == "redirect":
        assert len(redirector.requests) == 1  # asked once, redirect refused, no retries
    else:
        assert media.requests == []


# Caller numbers in the logs --------------------------------------------------------------


@pytest.fixture
def json_log():
    """The service's JSON log lines, as its own formatter writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ivr")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # as configure_logging would (it skips: a JSON handler is on)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_caller_numbers_are_masked_in_the_logs(speech_server, media, json_log):
    caller, unknown_line = "+79031234567", "+15005550006"
    server = speech_server(ScriptedEngine("1 2 3"), recording_hosts=("127.0.0.1",))
    calls = [
        EmulatedCall(
            HttpTransport(), server.base_url, server.auth_token, at=NOON, media=media, from_=caller
        ),
        EmulatedCall(
            HttpTransport(),
            server.base_url,
            server.auth_token,
            at=NOON,
            media=media,
            from_=caller,
            to=unknown_line,
        ),
    ]
    first, second = calls
    first.start().press("1").silence().speak(AUDIO / "ru_order_digits_1.wav")
    first.press("4207315890").press("1").press("1").silence().silence()
    second.start().press("0").fallback().silence()
    for call in calls:
        call.wait_for_callbacks()
        assert call.result.ended and not call.result.errors
    _wait_for_recognitions(server.db_path, first.result.call_sid, 2)
    text = json_log.getvalue()
    entries = [json.loads(line) for line in text.splitlines()]  # one JSON object per line
    # Any run of digits and phone punctuation, as digits: "+7 (903) 123-45-67" -> 79031234567.
    written = {re.sub(r"\D", "", run) for run in re.findall(r"\+?\d[\d\s().-]{5,}\d", text)}
    for number in (caller, unknown_line):
        assert not [run for run in written if number[-8:] in run], number
    assert any(entry.get("from_number") == "***4567" for entry in entries)
    assert any(entry.get("to_number") == "***0006" for entry in entries)
    for call in calls:
        assert any(entry.get("call_sid") == call.result.call_sid for entry in entries)


# No secrets in the repository ------------------------------------------------------------


def test_no_credentials_are_tracked_in_the_repository():
    try:
        tracked = (
            subprocess.run(
                ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
            )
            .stdout.decode()
            .split("\0")
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    tracked = [name for name in tracked if name]
    assert not [name for name in tracked if name.startswith("instance/")]
    assert not [name for name in tracked if Path(name).name in ("dev-auth-token", "secret-key")]
    assignment = re.compile(
        r"(?i)(auth_?token|api_?secret|password|secret_?key)\w*[\"']?\s*[:=]\s*[\"']([0-9a-f]{32})[\"']"
    )
    api_key = re.compile(r"\bSK[0-9a-f]{32}\b")
    found = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 1_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {match.group(0)}" for match in assignment.finditer(text)]
        found += [f"{name}: {match.group(0)}" for match in api_key.finditer(text)]
    assert found == []

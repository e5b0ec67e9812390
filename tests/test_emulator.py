"""The Twilio emulator itself: signatures as Twilio makes them, TwiML executed as Twilio does."""

import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from flask import Flask, request
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from ivr import db as database
from ivr.db import calls as call_store
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, FlaskTransport, HttpTransport, MediaServer

AUDIO = Path(__file__).parent / "fixtures" / "audio"
TOKEN = "emulator-test-token"


class ValidatingTransport(HttpTransport):
    """Checks every request the emulator sends with twilio's own RequestValidator."""

    def __init__(self, token):
        super().__init__()
        self.validator = RequestValidator(token)
        self.checked = 0

    def post(self, url, params, headers):
        assert self.validator.validate(url, params, headers["X-Twilio-Signature"]), url
        assert {
            "CallSid",
            "AccountSid",
            "From",
            "To",
            "CallStatus",
            "ApiVersion",
            "Direction",
        } <= set(params)
        self.checked += 1
        return super().post(url, params, headers)


@pytest.fixture
def server():
    with LocalServer() as local:
        yield local


def test_signatures_validate_with_twilios_request_validator(server):
    transport = ValidatingTransport(server.auth_token)
    call = EmulatedCall(
        transport, server.base_url, server.auth_token, at="2026-11-26T12:00:00+03:00"
    )
    call.start().press("1").press("4207315890").press("1").press("1").silence()
    assert call.result.end == "connected" and not call.result.errors
    assert transport.checked == len(call.result.statuses) >= 7


def test_a_wrong_token_is_rejected_by_the_ivr(server):
    call = EmulatedCall(HttpTransport(), server.base_url, "not-the-token")
    call.start()
    assert call.result.statuses[0] == 403 and call.result.end == "error"
    with database.connect(server.db_path) as db:
        assert call_store.get_call(db, call.result.call_sid) is None


def test_status_callback_reports_completed_with_duration(server):
    call = EmulatedCall(
        HttpTransport(), server.base_url, server.auth_token, at="2026-11-26T12:00:00+03:00"
    )
    call.start().press("0").silence()
    with database.connect(server.db_path) as db:
        row = call_store.get_call(db, call.result.call_sid)
    assert row["status"] == "completed" and row["duration"] >= 1


def test_duplicate_deliveries_get_identical_answers(server):
    call = EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        at="2026-11-26T12:00:00+03:00",
        deliveries=3,
    )
    call.start().press("0").silence()
    assert not call.result.errors and call.result.end == "connected"
    with database.connect(server.db_path) as db:
        tickets = db.execute("SELECT count(*) FROM tickets").fetchone()[0]
    assert tickets == 1


# <Record> and the media host, against a small TwiML app written for the test -------------


@pytest.fixture
def record_app():
    """A TwiML app that records, and remembers every webhook it receives."""
    app = Flask(__name__)
    received = []

    @app.post("/twilio/voice")
    def voice():
        received.append(("voice", dict(request.form)))
        response = VoiceResponse()
        response.say("Say your order number after the beep.")
        response.record(
            action="/recorded",
            max_length=15,
            timeout=3,
            trim="trim-silence",
            finish_on_key="#",
            recording_status_callback="/recording-status",
            recording_status_callback_event="completed absent",
        )
        response.say("Nothing was recorded.")
        response.redirect("/after-silence")
        return str(response)

    @app.post("/recorded")
    def recorded():
        received.append(("recorded", dict(request.form)))
        response = VoiceResponse()
        response.say("Thank you.")
        response.hangup()
        return str(response)

    @app.post("/recording-status")
    def recording_status():
        received.append(("recording-status", dict(request.form)))
        return "", 204

    @app.post("/after-silence")
    def after_silence():
        received.append(("after-silence", dict(request.form)))
        response = VoiceResponse()
        response.say("Goodbye.")
        return str(response)

    @app.post("/twilio/status")
    def status():
        received.append(("status", dict(request.form)))
        return "", 204

    return app, received


@pytest.fixture
def media():
    host = MediaServer()
    yield host
    host.close()


def _fetch(url, auth=None):
    request_ = urllib.request.Request(url)
    if auth:
        import base64

        request_.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request_, timeout=5) as response:  # noqa: S310
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, b"", ""


def test_speaking_into_a_record_posts_action_and_status_callback(record_app, media):
    app, received = record_app
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", TOKEN, media=media)
    call.start()
    assert call.waiting_for == "Record"
    call.speak(AUDIO / "ru_order_digits_1.wav")
    call.wait_for_callbacks()
    kinds = [kind for kind, _ in received]
    assert kinds[:2] == ["voice", "recorded"] and "recording-status" in kinds
    action = dict(received)["recorded"]
    assert action["RecordingSid"].startswith("RE") and action["RecordingDuration"] == "5"
    assert action["RecordingUrl"].startswith(media.base_url + "/2010-04-01/Accounts/AC")
    status = dict(received)["recording-status"]
    assert status["RecordingStatus"] == "completed"
    assert status["RecordingUrl"] == action["RecordingUrl"]
    assert "Thank you." in call.result.transcript and call.result.ended
    # The recording is served where Twilio would serve it, as WAV and as MP3.
    original = (AUDIO / "ru_order_digits_1.wav").read_bytes()
    assert _fetch(action["RecordingUrl"])[1] == original
    assert _fetch(action["RecordingUrl"] + ".wav")[1] == original
    status_code, body, content_type = _fetch(action["RecordingUrl"] + ".mp3")
    assert (
        status_code == 200
        and content_type == "audio/mpeg"
        and body[:3] in (b"ID3", b"\xff\xf3", b"\xff\xfb", b"\xff\xf2")
    )


def test_silence_at_a_record_sends_an_empty_recording_to_the_action(record_app, media):
    # Today's <Record> page: a silent recording is saved; the action gets duration 0.
    app, received = record_app
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", TOKEN, media=media)
    call.start().silence()
    call.wait_for_callbacks()
    recorded = dict(received)["recorded"]
    assert recorded["RecordingDuration"] == "0" and "Digits" not in recorded
    assert dict(received)["recording-status"]["RecordingStatus"] == "absent"
    assert "Nothing was recorded." not in call.result.transcript  # verbs after are unreached


def test_silence_with_the_older_behaviour_skips_the_action(record_app, media):
    # The older page: an empty recording skips the action and the next verb runs.
    app, received = record_app
    call = EmulatedCall(
        FlaskTransport(app.test_client()),
        "http://localhost",
        TOKEN,
        media=media,
        empty_recording="skip",
    )
    call.start().silence()
    call.wait_for_callbacks()
    kinds = [kind for kind, _ in received]
    assert "recorded" not in kinds and "after-silence" in kinds
    assert "Nothing was recorded." in call.result.transcript


def test_pound_at_a_record_ends_it_and_sends_the_key(record_app, media):
    # "pressing finishOnKey immediately stops recording and submits ... the digit".
    app, received = record_app
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", TOKEN, media=media)
    call.start().press("#")
    recorded = dict(received)["recorded"]
    assert (recorded["Digits"], recorded["RecordingDuration"]) == ("#", "0")
    assert "Thank you." in call.result.transcript


def test_speaking_then_pound_sends_the_recording_and_the_key(record_app, media):
    app, received = record_app
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", TOKEN, media=media)
    call.start().speak(AUDIO / "en_order_digits.wav", finish_key="#")
    recorded = dict(received)["recorded"]
    assert recorded["Digits"] == "#" and int(recorded["RecordingDuration"]) >= 2


def test_hanging_up_during_a_record_sends_hangup_as_the_key(record_app, media):
    app, received = record_app
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", TOKEN, media=media)
    call.start().hang_up()
    assert dict(received)["recorded"]["Digits"] == "hangup"
    assert [kind for kind, _ in received][-1] == "status"


def test_a_document_twilio_would_refuse_ends_the_call_with_its_error():
    app = Flask(__name__)

    @app.post("/twilio/voice")
    def voice():
        return '<Response><Say loop="twice">Hi</Say></Response>'

    @app.post("/twilio/status")
    def status():
        return "", 204

    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", TOKEN).start()
    assert call.result.end == "error" and "12200" in call.result.errors[0]


def test_a_queued_caller_waits_until_something_dequeues_them(server):
    call = EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        dial_status="no-answer",
        at="2026-11-26T12:00:00+03:00",
    )
    call.start().press("0").silence()
    assert call.in_queue and not call.result.ended and call.result.end == "queued"
    call.wait_in_queue().wait_in_queue()
    assert call.in_queue  # nothing made up: no QueueResult without a dequeue
    call.hang_up()
    assert call.result.end == "queued" and call.result.ended


def test_a_recording_can_be_not_ready_for_the_first_fetches(media):
    url, recording = media.add("AC" + "1" * 32, AUDIO / "en_yes.wav", not_ready_fetches=2)
    assert _fetch(url)[0] == 404
    assert _fetch(url + ".wav")[0] == 404
    assert _fetch(url + ".wav")[0] == 200
    assert recording.fetches == 3


def test_media_host_can_require_basic_auth():
    host = MediaServer(credentials=("AC" + "2" * 32, TOKEN))
    try:
        url, _ = host.add("AC" + "2" * 32, AUDIO / "en_no.wav")
        assert _fetch(url)[0] == 401
        assert _fetch(url, auth="AC" + "2" * 32 + ":" + TOKEN)[0] == 200
        assert _fetch(url, auth="AC" + "2" * 32 + ":wrong")[0] == 401
    finally:
        host.close()


def test_unknown_recordings_are_404(media):
    assert _fetch(media.base_url + "/2010-04-01/Accounts/AC1/Recordings/RE404")[0] == 404
    assert _fetch(media.base_url + "/etc/passwd")[0] == 404


def test_speaking_at_a_keypad_gather_is_a_time_out(server):
    call = EmulatedCall(
        HttpTransport(), server.base_url, server.auth_token, at="2026-11-26T12:00:00+03:00"
    )
    call.start().speak(AUDIO / "ru_yes.wav")
    assert "Я вас не услышала" in call.result.transcript


def test_concurrent_emulated_calls_are_independent(server):
    results = []

    def one(index):
        call = EmulatedCall(
            HttpTransport(),
            server.base_url,
            server.auth_token,
            from_=f"+7916000{index:04d}",
            at="2026-11-26T12:00:00+03:00",
        )
        call.start().press("0").silence()
        results.append(call.result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.call_sid for r in results}) == 10
    assert all(r.end in ("connected", "queued") and not r.errors for r in results), [
        (r.end, r.errors) for r in results
    ]

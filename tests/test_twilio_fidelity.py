"""Twilio as it really is: what a real call sends, and what the service does with it.

Each test names the Twilio behaviour it holds the service to (the TwiML and webhook pages:
<Record>, <Dial>, <Enqueue>, status callbacks, fallback URLs, request signatures).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import AUTH_TOKEN, CALLER, DOMESTIC, INTERNATIONAL
from test_speech_flow import ScriptedEngine

from ivr.cli import main
from ivr.config import ConfigError, load_settings
from ivr.db import calls as call_store
from ivr.emulator import EmulatedCall, FlaskTransport, HttpTransport, new_sid, sign
from ivr.emulator.twiml_rules import check

AUDIO = Path(__file__).parent / "fixtures" / "audio"
NOON = "2026-11-26T12:00:00+03:00"
NOT_HEARD = "Я не услышала номер"
ONE_MOMENT = "Одну секунду"


def _post(client, path, params, base="http://localhost", prefix=""):
    headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, base + prefix + path, params)}
    return client.post(path, data=params, headers=headers, base_url=base)


def _params(call_sid, **extra):
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": CALLER,
        "To": DOMESTIC,
        "CallStatus": "in-progress",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
        **extra,
    }


def _at_the_operator(call):
    """A caller who asked for an operator: the <Dial> is running (seq in its action)."""
    c = call().press("0").silence()
    return c


def _row_counts(db):
    return {
        table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        for table in ("calls", "events", "tickets", "webhook_responses")
    }


# 1. <Record> ended by a key or by silence ---------------------------------------------


def _speech_call(server, media):
    return EmulatedCall(
        HttpTransport(), server.base_url, server.auth_token, at=NOON, media=media
    ).start()


@pytest.mark.parametrize("how", ["pound", "silence"])
def test_nothing_said_at_the_order_number_is_told_at_once_without_waiting(
    speech_server, media, how
):
    server = speech_server(ScriptedEngine("4 2 0 7 3 1 5 8 9 0"))
    call = _speech_call(server, media).press("1").silence()
    assert call.waiting_for == "Record"
    before = len(call.result.statuses)
    call.press("#") if how == "pound" else call.silence()
    heard = call.result.transcript.split("\n")
    assert any(NOT_HEARD in line for line in heard)
    assert not any(ONE_MOMENT in line for line in heard)  # no "checking the number" polls
    paths = [path for path, _ in call.result.latencies[before:]]
    assert not any("/twilio/result/" in path for path in paths), paths
    assert call.waiting_for == "Gather"  # straight back to the prompt


def test_a_number_said_then_pound_is_recognised(speech_server, media):
    server = speech_server(ScriptedEngine("4 2 0 7 3 1 5 8 9 0"))
    call = _speech_call(server, media).press("1").silence()
    call.speak(AUDIO / "ru_order_digits_1.wav", finish_key="#")
    assert "Вы назвали номер заказа: 4 2 0, 7 3 1, 5 8 9 0" in call.result.transcript


def test_a_description_said_then_pound_is_passed_on(speech_server, media):
    server = speech_server(ScriptedEngine("посылка не пришла"))
    call = _speech_call(server, media).press("1").press("4207315890").press("1").press("5")
    assert call.waiting_for == "Record"
    call.speak(AUDIO / "ru_problem.wav", finish_key="#")
    assert "описание передано" in call.result.transcript
    assert "Номер обращения" in call.result.transcript


@pytest.mark.parametrize("empty_recording", ["action", "skip"])
def test_silence_at_the_description_says_nothing_about_passing_it_on(
    speech_server, media, empty_recording
):
    # Both <Record> pages: today's (the action gets duration 0), the older (no action).
    server = speech_server(ScriptedEngine())
    call = EmulatedCall(
        HttpTransport(),
        server.base_url,
        server.auth_token,
        at=NOON,
        media=media,
        empty_recording=empty_recording,
    ).start()
    call.press("1").press("4207315890").press("1").press("5").silence()
    assert "Номер обращения" in call.result.transcript
    assert "описание передано" not in call.result.transcript


# 2. DialCallStatus, every documented value ---------------------------------------------


@pytest.mark.parametrize(
    "status, outcome, queued",
    [
        ("completed", "connected", False),
        ("answered", "connected", False),
        ("busy", "queued", True),
        ("no-answer", "queued", True),
        ("failed", "queued", True),
        ("canceled", "queued", True),
    ],
)
def test_every_dial_call_status(app, db, status, outcome, queued):
    c = EmulatedCall(
        FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN, dial_status=status
    ).start()
    c.press("0").silence()
    row = call_store.get_call(db, c.result.call_sid)
    assert row["outcome"] == outcome
    assert c.in_queue is queued
    assert ("Оператор не смог ответить" in c.result.transcript) is queued


@pytest.mark.parametrize("value", ["in-progress", "connected", "", "completed "])
def test_an_undocumented_dial_call_status_is_refused_and_changes_nothing(app, client, db, value):
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    c.press("0")
    seq = call_store.current_seq(db, c.result.call_sid)
    before = _row_counts(db)
    response = _post(
        client, f"/twilio/dial?seq={seq}", _params(c.result.call_sid, DialCallStatus=value)
    )
    assert response.status_code == 400
    assert _row_counts(db) == before


# 3. A final status while connecting ----------------------------------------------------


@pytest.mark.parametrize(
    "final, outcome",
    [
        ("completed", "connected"),
        ("failed", "failed"),
        ("busy", "busy"),
        ("no-answer", "no-answer"),
        ("canceled", "canceled"),
    ],
)
def test_a_call_that_fails_while_connecting_is_not_recorded_as_connected(
    app, client, db, final, outcome
):
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    c.press("0")
    assert "Соединяю" in c.result.transcript or c.waiting_for == "Gather"
    # The <Dial> is what runs now: the call's outcome is "connecting".
    c2 = c.silence() if c.waiting_for else c
    sid = c2.result.call_sid
    db.execute("UPDATE calls SET outcome = 'connecting', ended_at = NULL, status = 'in-progress'")
    db.execute("DELETE FROM webhook_responses WHERE key LIKE ?", [f"{sid}:status:%"])
    db.conn.commit()
    response = _post(client, "/twilio/status", _params(sid, CallStatus=final, CallDuration="7"))
    assert response.status_code == 204
    assert call_store.get_call(db, sid)["outcome"] == outcome


# 4. QueueResult ------------------------------------------------------------------------


def _queued(app, db):
    c = EmulatedCall(
        FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN, dial_status="busy"
    ).start()
    c.press("0").silence()
    assert c.in_queue
    return c.result.call_sid, call_store.current_seq(db, c.result.call_sid)


@pytest.mark.parametrize(
    "result, outcome, hears",
    [
        ("bridged", "connected", None),
        ("bridging-in-process", "connected", None),
        ("redirected-from-bridged", "connected", None),
        ("hangup", "hung_up_in_queue", None),
        ("leave", "callback_after_queue", "Оператор перезвонит вам"),
        ("queue-full", "callback_after_queue", "не можем соединить"),
        ("error", "queued", "Оператор сейчас занят"),
        ("system-error", "queued", "Оператор сейчас занят"),
        ("redirected", "queued", None),
    ],
)
def test_every_queue_result_through_the_webhook(app, client, db, result, outcome, hears):
    sid, seq = _queued(app, db)
    response = _post(client, f"/twilio/queue?seq={seq}", _params(sid, QueueResult=result))
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    check(body)
    assert call_store.get_call(db, sid)["outcome"] == outcome
    if hears:
        assert hears in body
    if result == "redirected":
        assert "<Say" not in body and "<Hangup" not in body  # the REST update's URL runs


def test_an_undocumented_queue_result_is_refused(app, client, db):
    sid, seq = _queued(app, db)
    before = _row_counts(db)
    response = _post(client, f"/twilio/queue?seq={seq}", _params(sid, QueueResult="dequeued"))
    assert response.status_code == 400 and _row_counts(db) == before


# 5. Recording downloads need the account SID ------------------------------------------


def test_speech_without_an_account_sid_refuses_to_start(make_app, tmp_path):
    with pytest.raises(ConfigError, match="IVR_TWILIO_ACCOUNT_SID"):
        make_app(vosk_models={"ru": str(tmp_path)}, account_sid="")


def test_ivr_serve_says_so_in_one_line_and_exits_non_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("IVR_DB", str(tmp_path / "ivr.sqlite3"))
    monkeypatch.setenv("IVR_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    monkeypatch.setenv("IVR_VOSK_MODEL_RU", str(tmp_path))
    monkeypatch.delenv("IVR_TWILIO_ACCOUNT_SID", raising=False)
    result = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "IVR_TWILIO_ACCOUNT_SID" in lines[0]


def test_healthz_shows_the_media_hosts_refusals(app, client):
    fetcher = app.extensions["ivr.speech"].fetcher
    fetcher.auth_failures, fetcher.last_auth_failure = 3, "HTTP 401"
    speech = json.loads(client.get("/healthz").data)["speech"]
    assert (speech["media_auth_failures"], speech["last_media_auth_failure"]) == (3, "HTTP 401")


# 6. The numbers ------------------------------------------------------------------------


def test_each_line_answers_on_all_its_identities(make_app, db):
    settings = load_settings(
        {
            "IVR_DOMESTIC_NUMBERS": "+12025550143, sip:8800@ivr-trunk.pstn.twilio.com",
            "IVR_INTERNATIONAL_NUMBERS": "+12025550199",
        }
    )
    app = make_app(
        domestic_numbers=settings.domestic_numbers,
        international_numbers=settings.international_numbers,
    )
    lines = {}
    for to in (
        DOMESTIC,
        INTERNATIONAL,
        "+12025550143",
        "sip:8800@ivr-trunk.pstn.twilio.com;transport=udp",
        "+12025550199",
    ):
        c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN, to=to)
        c.start()
        lines[to] = call_store.get_call(db, c.result.call_sid)["line"]
    assert list(lines.values()) == [
        "domestic",
        "international",
        "domestic",
        "domestic",
        "international",
    ]


def test_a_number_on_neither_line_is_logged_once_per_value(app, caplog):
    with caplog.at_level(logging.WARNING, logger="ivr.calls"):
        for _ in range(3):
            EmulatedCall(
                FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN, to="+15005550006"
            ).start()
    warnings = [r for r in caplog.records if "neither line" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].to_number == "+15005550006"


def test_the_singular_number_variables_still_work():
    settings = load_settings({"IVR_DOMESTIC_NUMBER": "+78001112233"})
    assert settings.line_numbers["domestic"] == ("+78001112233",)


@pytest.mark.parametrize("value", ["88002345555", "+7 800 234", "tel:+78002345555", "sip:"])
def test_a_malformed_identity_is_a_config_error(value):
    with pytest.raises(ConfigError, match="IVR_DOMESTIC_NUMBERS"):
        load_settings({"IVR_DOMESTIC_NUMBERS": value})


# 7. IVR_PUBLIC_URL with a path ---------------------------------------------------------


@pytest.mark.parametrize("proxy_strips", [True, False])
def test_a_public_url_with_a_path_prefixes_every_twiml_url(make_app, proxy_strips):
    app = make_app(public_url="https://hotline.example.ru/ivr")
    client = app.test_client()
    base, sid = "https://hotline.example.ru", new_sid("CA")
    path = "/twilio/voice" if proxy_strips else "/ivr/twilio/voice"
    params = _params(sid, CallStatus="ringing")
    headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, base + "/ivr/twilio/voice", params)}
    response = client.post(path, data=params, headers=headers, base_url=base)
    assert response.status_code == 200
    root = check(response.get_data(as_text=True))
    urls = [
        value
        for element in root.iter()
        for name, value in element.attrib.items()
        if name in ("action", "waitUrl", "recordingStatusCallback")
    ] + [(element.text or "").strip() for element in root.iter("Redirect")]
    assert urls and all(url.startswith("/ivr/twilio/") for url in urls), urls


# 8. answerOnBridge ---------------------------------------------------------------------


def test_dial_carries_no_answer_on_bridge(app):
    bodies = []

    class Capturing(FlaskTransport):
        def post(self, url, params, headers):
            status, body = super().post(url, params, headers)
            bodies.append(body)
            return status, body

    EmulatedCall(Capturing(app.test_client()), "http://localhost", AUTH_TOKEN).start().press(
        "0"
    ).silence()
    dials = [body for body in bodies if "<Dial" in body]
    assert dials and not any("answerOnBridge" in body for body in dials)


# 9. Exactly-once keys that cannot be shifted ------------------------------------------


def test_a_status_callback_with_text_shifted_between_fields_is_refused(app, client, db):
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    sid = c.result.call_sid
    params = _params(sid, CallStatus="completed", Called=DOMESTIC, CallDuration="30")
    url = "http://localhost/twilio/status"
    signature = sign(AUTH_TOKEN, url, params)
    # Names and values run together unseparated: "CallStatuscompletedCalled+7800..." is
    # also CallStatus="completedCalled+7800..." with no Called field. Same signature.
    shifted = {k: v for k, v in params.items() if k != "Called"}
    shifted["CallStatus"] = "completedCalled" + DOMESTIC
    assert sign(AUTH_TOKEN, url, shifted) == signature
    before = _row_counts(db)
    response = client.post(
        "/twilio/status", data=shifted, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 400
    assert _row_counts(db) == before
    assert call_store.get_call(db, sid)["status"] != "completedCalled" + DOMESTIC


def test_a_fallback_with_text_shifted_between_fields_does_not_run_again(app, client, db):
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    sid = c.result.call_sid
    seq = call_store.current_seq(db, sid)
    params = _params(
        sid, ErrorCode="11200", ErrorUrl=f"http://localhost/twilio/gather/main_menu?seq={seq}"
    )
    url = "http://localhost/twilio/fallback"
    signature = sign(AUTH_TOKEN, url, params)
    first = client.post("/twilio/fallback", data=params, headers={"X-Twilio-Signature": signature})
    assert "Номер обращения" in first.get_data(as_text=True)
    after_first = _row_counts(db)
    shifted = {k: v for k, v in params.items() if k != "ErrorUrl"}
    shifted["ErrorCode"] = "11200ErrorUrl" + params["ErrorUrl"]
    assert sign(AUTH_TOKEN, url, shifted) == signature
    for replay in (params, shifted):
        again = client.post(
            "/twilio/fallback", data=replay, headers={"X-Twilio-Signature": signature}
        )
        assert again.status_code == 200
        check(again.get_data(as_text=True))  # the caller still hears something sensible
    assert _row_counts(db) == after_first
    events = [e["kind"] for e in call_store.call_events(db, sid)]
    assert events.count("fallback") == 1


@pytest.mark.parametrize(
    "path, field",
    [
        ("/twilio/status", "CallStatus"),
        ("/twilio/recording-status?purpose=order_number&lang=ru", "RecordingStatus"),
    ],
)
def test_made_up_status_values_are_refused(app, client, db, path, field):
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    params = _params(c.result.call_sid, RecordingSid=new_sid("RE"))
    params[field] = "answered-by-the-operator"
    before = _row_counts(db)
    assert _post(client, path, params).status_code == 400
    assert _row_counts(db) == before

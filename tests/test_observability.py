"""Observability: JSON log lines with CallSid and step, /healthz, and /metrics counters."""

import io
import json
import logging
import re

from conftest import AUTH_TOKEN, CALLER

from ivr.config import load_settings
from ivr.emulator import EmulatedCall, FlaskTransport
from ivr.logs import JsonFormatter, mask_phone, mask_phones_in


def _whole_call(app, **kwargs):
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN, **kwargs)
    return call.start().press("1").press("4207315890").press("1").press("1").silence()


def test_logs_are_one_json_object_per_line_with_call_sid_and_masked_numbers(app):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ivr")
    logger.addHandler(handler)
    try:
        call = _whole_call(app)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    handled = [entry for entry in lines if entry["message"] == "webhook handled"]
    assert handled and all(entry["call_sid"] == call.result.call_sid for entry in handled)
    assert {"kind", "seq", "step", "latency_ms", "time", "level"} <= set(handled[0])
    assert [entry["step"] for entry in handled][:3] == [
        "main_menu",
        "order_number",
        "confirm_order",
    ]
    # One line per webhook: a new call's line also says where it came from (number masked).
    started = handled[0]
    assert started["kind"] == "voice" and started["open"] is True
    assert started["from_number"] == "***4567" and started["line"] == "domestic"
    assert CALLER not in stream.getvalue() and CALLER[1:] not in stream.getvalue()


def test_masking_helpers():
    assert mask_phone("+7 (916) 123-45-67") == "***4567"
    assert mask_phone("") == ""
    assert mask_phones_in("caller +79161234567 called") == "caller ***4567 called"


def test_healthz_reports_database_and_speech(client):
    body = client.get("/healthz").get_json()
    assert body["status"] == "ok" and body["database"]["schema_version"] >= 1
    assert "speech" in body and "models" in body["speech"]


def test_metrics_count_calls_by_outcome_and_webhook_latency(app):
    _whole_call(app)
    _whole_call(app, from_="+79035550000")  # a second connected call
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'ivr_calls_total{outcome="connected"} 2' in text
    assert re.search(r'ivr_webhooks_total\{kind="gather",status="200"\} \d+', text)
    count = re.search(r'ivr_webhook_seconds_count\{kind="gather"\} (\d+)', text)
    assert count and int(count.group(1)) >= 8
    assert 'ivr_webhook_seconds_bucket{kind="gather",le="+Inf"}' in text
    assert "# TYPE ivr_webhook_seconds histogram" in text


def test_metrics_count_safe_fallback_answers(app, db_path, monkeypatch):
    from ivr.web import voice

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure inside the flow")

    monkeypatch.setattr(voice.flow, "run", broken)  # a bug in the flow: the caller is still served
    call = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    assert "техническая неполадка" in call.result.transcript and call.result.queue == "support-ru"
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'ivr_webhook_failures_total{kind="incoming_call"} 1' in text


def test_metrics_are_served_to_loopback_only_by_default(app):
    assert app.test_client().get("/metrics").status_code == 200
    for address in ("203.0.113.5", "10.0.0.7", "::ffff:8.8.8.8"):
        remote = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": address})
        assert remote.status_code == 403, address
    assert app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_metrics_want_the_bearer_token_when_one_is_set(make_app):
    app = make_app(metrics_token="scrape-token-0123456789")
    remote = {"REMOTE_ADDR": "203.0.113.5"}
    client = app.test_client()
    assert client.get("/metrics", environ_base=remote).status_code == 401
    assert client.get("/metrics").status_code == 401  # loopback too, once a token is set
    wrong = {"Authorization": "Bearer scrape-token-wrong"}
    assert client.get("/metrics", headers=wrong, environ_base=remote).status_code == 401
    right = {"Authorization": "Bearer scrape-token-0123456789"}
    response = client.get("/metrics", headers=right, environ_base=remote)
    assert response.status_code == 200 and "ivr_calls_total" in response.get_data(as_text=True)


def test_metrics_token_comes_from_the_environment():
    assert load_settings({"IVR_METRICS_TOKEN": " t0ken "}).metrics_token == "t0ken"

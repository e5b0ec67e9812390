"""Webhooks signed exactly as Twilio signs them, followed step by step through whole calls."""

import json
import re

import pytest
from conftest import AUTH_TOKEN, CALLER, CLOSED_NOW, DOMESTIC, INTERNATIONAL

from ivr import db as database
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.db import tickets as ticket_store
from ivr.emulator import EmulatedCall, FlaskTransport, new_sid, sign
from ivr.tickets import is_valid_ticket_number

TICKET_SPOKEN = re.compile(r"(\d) (\d) (\d), (\d) (\d) (\d), (\d) (\d) (\d)(?! \d)")


def spoken_ticket(text: str) -> str:
    """The ticket number the caller heard, digits joined."""
    return "".join(TICKET_SPOKEN.findall(text)[-1])


def call_row(db, call):
    return call_store.get_call(db, call.result.call_sid)


def test_domestic_open_order_request_ends_with_operator(call, db):
    c = call()
    assert "Здравствуйте" in c.result.transcript
    assert "может быть записан" in c.result.transcript
    c.press("1").press("4207315890")
    assert "4 2 0, 7 3 1, 5 8 9 0" in c.result.transcript
    c.press("1").press("1")
    ticket = spoken_ticket(c.result.transcript)
    assert is_valid_ticket_number(ticket)
    assert "Иванова Мария Сергеевна" in c.result.transcript
    assert "24 часа" in c.result.transcript  # delivery resolves in a day
    c.silence()
    assert c.result.connected_to == "+79990000001" and c.result.ended
    row = call_row(db, c)
    assert (row["outcome"], row["ticket_number"], row["order_number"]) == (
        "connected",
        ticket,
        "4207315890",
    )
    assert (row["category"], row["operator_name"], row["status"]) == (
        "delivery",
        "Иванова Мария Сергеевна",
        "completed",
    )
    saved = ticket_store.get_ticket(db, ticket)
    assert saved["caller_number"] == CALLER and saved["status"] == "open"


def test_every_step_lands_in_the_timeline(call, db):
    c = call().press("0")
    kinds = [event["kind"] for event in call_store.call_events(db, c.result.call_sid)]
    assert kinds == ["call_started", "step", "prompt", "input", "ticket", "step", "prompt"]
    c.press("*")
    events = call_store.call_events(db, c.result.call_sid)
    assert events[-3]["detail"] == {"digits": "*"}
    assert "Номер обращения" in events[-1]["detail"]["texts"][0]


def test_star_repeats_ticket_and_operator(call):
    c = call().press("0").press("*")
    assert c.result.transcript.count("Номер обращения") == 2
    assert c.result.transcript.count("Иванова Мария Сергеевна") == 2


def test_international_line_in_english(call, db):
    c = call(to=INTERNATIONAL)
    assert "For English, press 2" in c.result.transcript
    c.press("2").press("1").press("5381062947").press("1").press("3")
    assert "Your request number is" in c.result.transcript
    assert "handled by Maria Ivanova" in c.result.transcript
    assert "within 5 days" in c.result.transcript
    row = call_row(db, c)
    assert (row["line"], row["language"], row["category"]) == ("international", "en", "payment")


def test_international_line_defaults_to_russian_on_silence(call, db):
    c = call(to=INTERNATIONAL).silence()
    assert c.result.heard[-1].language == "ru-RU"
    assert call_row(db, c)["language"] == "ru"


def test_unknown_number_gets_the_domestic_line(call, db):
    c = call(to="+15005550006")
    assert "Здравствуйте" in c.result.transcript
    assert call_row(db, c)["line"] == "domestic"


def test_invalid_keys_three_times_reach_an_operator_with_a_ticket(call, db):
    c = call().press("9").silence().press("7")
    assert "Такой клавиши нет в меню" in c.result.transcript
    assert "Я передам ваш звонок оператору" in c.result.transcript
    ticket = spoken_ticket(c.result.transcript)
    assert ticket_store.get_ticket(db, ticket)["category"] == "other"


def test_bad_order_numbers_are_asked_again_then_skipped(call, db):
    c = call().press("1").press("12345#").press("1234*")
    assert c.result.transcript.count("состоит из десяти цифр") == 2
    c.silence()
    assert "Продолжим без номера заказа" in c.result.transcript
    c.press("4")
    ticket = ticket_store.get_ticket(db, spoken_ticket(c.result.transcript))
    assert ticket["order_number"] is None and ticket["category"] == "quality"


def test_closed_line_callback_request(make_app, db_path):
    app = make_app(now=CLOSED_NOW)
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    text = c.result.transcript
    assert "с 8 до 20 часов по московскому времени" in text
    assert "Профиль, Помощь, Написать в поддержку" in text and "5–15 минут" in text
    assert "форму обратной связи" in text and "1–3 часов" in text
    c.press("1").press("4207315890").press("1").press("2")
    assert "перезвонит вам 27 ноября в 8:00 по московскому времени" in c.result.transcript
    assert "Иванова Мария Сергеевна" in c.result.transcript
    c.silence()
    assert c.result.ended and c.result.connected_to is None
    with database.connect(db_path) as db:
        row = call_store.get_call(db, c.result.call_sid)
        ticket = ticket_store.get_ticket(db, row["ticket_number"])
    assert row["outcome"] == "after_hours_callback" and row["after_hours"] == 1
    assert ticket["after_hours"] == 1 and ticket["callback_at"].startswith("2026-11-27T08:00")


def test_closed_line_silence_says_goodbye(make_app, db_path):
    app = make_app(now=CLOSED_NOW)
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    c.silence()
    assert c.result.ended and "До свидания" in c.result.transcript
    with database.connect(db_path) as db:
        assert call_store.get_call(db, c.result.call_sid)["outcome"] == "closed_no_request"


def _ticket_from_a_call(call, from_=CALLER, order="4207315890") -> str:
    c = call(from_=from_).press("1").press(order).press("1").press("1").silence()
    return spoken_ticket(c.result.transcript)


def test_status_for_the_same_caller_is_told_at_once(call, db):
    ticket = _ticket_from_a_call(call)
    ticket_store.set_ticket_status(db, ticket, "in_progress", database_now())
    db.conn.commit()
    c = call().press("2").press(ticket + "#")
    assert "Статус: в работе" in c.result.transcript
    assert "оператор Иванова Мария Сергеевна" in c.result.transcript
    assert "Срок решения — до 27 ноября" in c.result.transcript


def database_now():
    from ivr.hours import parse_instant

    return parse_instant("2026-11-26T12:00:00+03:00")


def test_status_for_another_caller_needs_the_order_number(call):
    ticket = _ticket_from_a_call(call)
    c = call(from_="+79031112233").press("2").press(ticket + "#")
    assert "Статус" not in c.result.transcript
    assert "введите номер заказа" in c.result.transcript
    c.press("1111111111")
    assert (
        "Номер заказа не совпадает" in c.result.transcript and "Статус" not in c.result.transcript
    )
    c.press("4207315890")
    assert "Статус: открыто" in c.result.transcript


def test_mistyped_ticket_number_is_asked_again(call):
    ticket = _ticket_from_a_call(call)
    typo = ticket[:-2] + ticket[-1] + ticket[-2]
    if typo == ticket:  # the last two digits are equal: change one digit instead
        typo = ticket[:-1] + str((int(ticket[-1]) + 1) % 10)
    c = call().press("2").press(typo + "#")
    assert "Такого номера обращения не бывает" in c.result.transcript


def test_unknown_but_valid_ticket_number(call):
    c = call().press("2").press("123456784#")  # valid check digit, no such ticket
    assert "не найдено" in c.result.transcript


def test_busy_operator_queues_caller_with_position(call, db):
    first = call().press("0").silence()
    assert first.result.connected_to == "+79990000001"
    # Make the first call look live again: connected and not ended.
    call_store.update_call(db, first.result.call_sid, {"outcome": "connecting", "ended_at": None})
    db.conn.commit()
    second = call(from_="+79035556677").press("0")
    assert "Петров Алексей Николаевич" in second.result.transcript  # fewer open tickets
    third_db_state = roster_store.list_operators(db)
    assert [row["open_tickets"] for row in third_db_state] == [1, 1]


def test_operator_busy_means_enqueue(make_app, db_path):
    app = make_app(
        operators=[
            {
                "full_name": "Иванова Мария Сергеевна",
                "languages": "ru",
                "endpoint": "+79990000001",
                "shift_start": "08:00",
                "shift_end": "20:00",
            }
        ]
    )
    transport = FlaskTransport(app.test_client())
    first = EmulatedCall(transport, "http://localhost", AUTH_TOKEN).start().press("0")
    first.silence()  # dialled; the emulator reports completed, so mark it live again
    with database.connect(db_path) as db:
        call_store.update_call(
            db, first.result.call_sid, {"outcome": "connecting", "ended_at": None}
        )
        db.conn.commit()
    second = EmulatedCall(transport, "http://localhost", AUTH_TOKEN).start().press("0").silence()
    assert second.result.queue == "operator-1"
    assert "Оператор сейчас занят" in second.result.transcript
    assert any("номер в очереди: 1" in h.text for h in second.result.heard)


def test_empty_roster_still_gives_ticket_and_queue(make_app, db_path):
    app = make_app(operators=[])
    c = EmulatedCall(FlaskTransport(app.test_client()), "http://localhost", AUTH_TOKEN).start()
    c.press("0")
    assert "Оператор будет назначен" in c.result.transcript
    assert is_valid_ticket_number(spoken_ticket(c.result.transcript))
    c.silence()
    assert c.result.queue == "support-ru"


def test_dial_no_answer_puts_caller_in_queue(app):
    transport = FlaskTransport(app.test_client())
    c = EmulatedCall(transport, "http://localhost", AUTH_TOKEN, dial_status="no-answer")
    c.start().press("0").silence()
    assert not c.result.connected_to and c.result.queue == "support-ru"
    assert [h.kind for h in c.result.heard].count("dial") == 1
    assert "Оператор не смог ответить" in c.result.transcript


def test_hang_up_in_menu_is_recorded(call, db):
    c = call().press("1").hang_up()
    row = call_row(db, c)
    assert (row["status"], row["outcome"], row["step"]) == (
        "completed",
        "hung_up_in_menu",
        "order_number",
    )
    assert row["duration"] >= 1


# Signatures and bad requests --------------------------------------------------------------


def _params(**extra):
    return {
        "CallSid": new_sid("CA"),
        "AccountSid": new_sid("AC"),
        "From": CALLER,
        "To": DOMESTIC,
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
        **extra,
    }


def _post(client, path, params, token=AUTH_TOKEN, signature=None, base="http://localhost"):
    url = base + path
    headers = {}
    if signature is not False:
        headers["X-Twilio-Signature"] = signature or sign(token, url, params)
    return client.post(path, data=params, headers=headers, base_url=base)


@pytest.mark.parametrize(
    "path",
    [
        "/twilio/voice",
        "/twilio/status",
        "/twilio/fallback",
        "/twilio/gather/main_menu?seq=1",
        "/twilio/dial?seq=1",
        "/twilio/queue?seq=1",
        "/twilio/queue/wait?lang=ru",
    ],
)
@pytest.mark.parametrize("how", ["missing", "wrong_token", "tampered"])
def test_unsigned_or_badly_signed_requests_get_403_and_write_nothing(client, db, path, how):
    params = _params(Digits="1")
    if how == "missing":
        response = _post(client, path, params, signature=False)
    elif how == "wrong_token":
        response = _post(client, path, params, token="not-the-token")
    else:
        signature = sign(AUTH_TOKEN, "http://localhost" + path, params)
        response = _post(client, path, {**params, "Digits": "0"}, signature=signature)
    assert response.status_code == 403
    assert db.execute("SELECT count(*) FROM calls").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_no_token_configured_fails_closed(make_app):
    app = make_app(auth_token="")
    response = _post(app.test_client(), "/twilio/voice", _params(), token="")
    assert response.status_code == 403


def test_signature_checked_against_public_url_behind_a_proxy(make_app):
    app = make_app(public_url="https://ivr.example.ru")
    client = app.test_client()
    params = _params()
    signed_for_public = sign(AUTH_TOKEN, "https://ivr.example.ru/twilio/voice", params)
    ok = _post(client, "/twilio/voice", params, signature=signed_for_public)
    assert ok.status_code == 200
    again = _params()
    signed_for_internal = sign(AUTH_TOKEN, "http://localhost/twilio/voice", again)
    assert _post(client, "/twilio/voice", again, signature=signed_for_internal).status_code == 403


def test_duplicate_delivery_returns_same_twiml_and_no_second_ticket(app, db):
    client = app.test_client()
    params = _params()
    first = _post(client, "/twilio/voice", params)
    again = _post(client, "/twilio/voice", params)
    assert first.data == again.data
    press = {**params, "Digits": "0", "CallStatus": "in-progress"}
    answers = [_post(client, "/twilio/gather/main_menu?seq=1", press).data for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]
    assert db.execute("SELECT count(*) FROM tickets").fetchone()[0] == 1
    inputs = db.execute("SELECT count(*) FROM events WHERE kind = 'input'").fetchone()[0]
    assert inputs == 1


def test_replayed_old_request_creates_nothing_new(app, db):
    client = app.test_client()
    params = _params()
    _post(client, "/twilio/voice", params)
    press = {**params, "Digits": "0", "CallStatus": "in-progress"}
    _post(client, "/twilio/gather/main_menu?seq=1", press)
    _post(client, "/twilio/gather/ticket_info?seq=2", {**press, "Digits": ""})
    replay = _post(client, "/twilio/gather/main_menu?seq=1", press)
    assert replay.status_code == 200
    assert db.execute("SELECT count(*) FROM tickets").fetchone()[0] == 1


def test_stale_step_repeats_the_current_prompt(app, db):
    client = app.test_client()
    params = _params()
    _post(client, "/twilio/voice", params)
    response = _post(client, "/twilio/gather/category?seq=7", {**params, "Digits": "1"})
    assert response.status_code == 200 and b"main_menu?seq=1" in response.data
    assert call_store.get_call(db, params["CallSid"])["step"] == "main_menu"


@pytest.mark.parametrize(
    "path, extra, status",
    [
        ("/twilio/voice", {"CallSid": ""}, 400),
        ("/twilio/voice", {"CallSid": "not-a-sid"}, 400),
        ("/twilio/voice", {"CallSid": "CA" + "0" * 500}, 400),
        ("/twilio/gather/main_menu", {}, 400),  # no seq
        ("/twilio/gather/main_menu?seq=abc", {}, 400),
        ("/twilio/gather/main_menu?seq=1", {}, 404),  # unknown call
        ("/twilio/voice", {"From": "x" * 10_000}, 400),
    ],
)
def test_malformed_requests_get_a_clean_4xx(client, path, extra, status):
    response = _post(client, path, _params(**extra))
    assert response.status_code == status
    assert b"Traceback" not in response.data


def test_huge_body_is_refused(client):
    params = _params(Junk="x" * 200_000)
    response = _post(client, "/twilio/voice", params)
    assert response.status_code in (403, 413)


@pytest.mark.parametrize("digits", ["abc", "１２", "1;DROP TABLE calls", "<Say>", "9" * 65])
def test_non_key_digits_are_a_wrong_key_not_an_error(app, db, digits):
    client = app.test_client()
    params = _params()
    _post(client, "/twilio/voice", params)
    response = _post(client, "/twilio/gather/main_menu?seq=1", {**params, "Digits": digits})
    assert response.status_code == 200
    assert "Такой клавиши нет в меню" in response.get_data(as_text=True)


def test_unknown_step_in_url_repeats_current_prompt(app):
    client = app.test_client()
    params = _params()
    _post(client, "/twilio/voice", params)
    response = _post(client, "/twilio/gather/no_such_step?seq=1", {**params, "Digits": "1"})
    assert response.status_code == 200 and b"main_menu?seq=1" in response.data


# Status callbacks and fallback ------------------------------------------------------------


def test_status_callbacks_record_final_status_once_and_in_order(app, db):
    client = app.test_client()
    params = _params()
    _post(client, "/twilio/voice", params)
    for status in ("completed", "in-progress", "completed"):
        _post(client, "/twilio/status", {**params, "CallStatus": status, "CallDuration": "17"})
    row = call_store.get_call(db, params["CallSid"])
    assert (row["status"], row["duration"], row["outcome"]) == ("completed", 17, "hung_up_in_menu")
    statuses = [e for e in call_store.call_events(db, params["CallSid"]) if e["kind"] == "status"]
    assert [e["detail"]["status"] for e in statuses] == ["completed", "in-progress"]


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed", "canceled"])
def test_status_of_calls_that_never_reached_us(client, db, status):
    params = _params(CallStatus=status)
    assert _post(client, "/twilio/status", params).status_code == 204
    row = call_store.get_call(db, params["CallSid"])
    assert (row["status"], row["outcome"]) == (status, status)


def test_fallback_for_known_call_gives_ticket_and_operator(app, db):
    client = app.test_client()
    params = _params()
    _post(client, "/twilio/voice", params)
    response = _post(
        client,
        "/twilio/fallback",
        {**params, "ErrorCode": "11200", "ErrorUrl": "http://localhost/twilio/gather/x"},
    )
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and "техническая неполадка" in text
    assert "Иванова Мария Сергеевна" in text and "Номер обращения" in text
    row = call_store.get_call(db, params["CallSid"])
    assert row["ticket_number"] and is_valid_ticket_number(row["ticket_number"])


def test_fallback_for_a_call_never_seen_records_it_and_gives_a_ticket(client, db):
    # The call's very first webhook failed: Twilio went straight to the fallback URL.
    params = _params(ErrorCode="11200", ErrorUrl="https://ivr.example.ru/twilio/voice")
    params["CallStatus"] = "in-progress"
    response = _post(client, "/twilio/fallback", params)
    text = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "техническая неполадка" in text and "Номер обращения" in text
    row = call_store.get_call(db, params["CallSid"])
    assert (row["line"], row["from_number"], row["to_number"]) == ("domestic", CALLER, DOMESTIC)
    ticket = ticket_store.ticket_for_call(db, params["CallSid"])
    assert ticket is not None and ticket["caller_number"] == CALLER
    events = [e["kind"] for e in call_store.call_events(db, params["CallSid"])]
    assert "fallback" in events
    fallback_event = call_store.call_events(db, params["CallSid"])[events.index("fallback")]
    assert fallback_event["detail"]["error_code"] == "11200"
    # The status callback completes it as any other call.
    _post(client, "/twilio/status", {**params, "CallStatus": "completed", "CallDuration": "30"})
    row = call_store.get_call(db, params["CallSid"])
    assert (row["status"], row["duration"]) == ("completed", 30)
    assert row["outcome"] != "hung_up"


def test_healthz_reports_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert json.loads(response.data)["database"]["schema_version"] == len(database.MIGRATIONS)

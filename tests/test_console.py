"""The operator console through Flask's test client: access, CSRF, escaping, search, audit."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from click.testing import CliRunner
from conftest import AUTH_TOKEN, CALLER, INTERNATIONAL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.security import generate_password_hash

from ivr import accounts, cli
from ivr import db as database
from ivr.call_log import CALL_FIELDS
from ivr.config import Settings
from ivr.db import audit as audit_store
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.db import search
from ivr.db import tickets as ticket_store
from ivr.devserver import LocalServer
from ivr.emulator import EmulatedCall, FlaskTransport
from ivr.web.app import create_app
from ivr.web.console.formatting import csv_cell, format_moscow

ADMIN_PASSWORD = "admin-password-1"
OPERATOR_PASSWORD = "operator-password-1"
ORDER = "4207315890"
OTHER_ORDER = "5381062947"


@cache
def password_hashes() -> tuple[str, str]:
    """Cheap scrypt parameters for the fixtures' accounts, so each sign-in takes milliseconds.

    Verification follows the parameters stored in the hash; what the console and the CLI
    store is checked in test_new_passwords_get_full_strength_scrypt.
    """
    return tuple(
        generate_password_hash(password, method="scrypt:1024:8:1")
        for password in (ADMIN_PASSWORD, OPERATOR_PASSWORD)
    )


def console_operators() -> list[dict]:
    admin_hash, operator_hash = password_hashes()
    return [
        {
            "full_name": "Иванова Мария Сергеевна",
            "name_en": "Maria Ivanova",
            "login": "ivanova",
            "role": "admin",
            "password_hash": admin_hash,
            "languages": "ru,en",
            "endpoint": "+79990000001",
            "shift_start": "08:00",
            "shift_end": "20:00",
        },
        {
            "full_name": "Петров Алексей Николаевич",
            "name_en": "Alexey Petrov",
            "login": "petrov",
            "role": "operator",
            "password_hash": operator_hash,
            "languages": "ru",
            "endpoint": "sip:petrov@pbx.example.ru",
            "shift_start": "08:00",
            "shift_end": "20:00",
        },
    ]


@pytest.fixture
def app(make_app):
    return make_app(operators=console_operators())


def place_call(app, **kwargs) -> EmulatedCall:
    transport = FlaskTransport(app.test_client())
    return EmulatedCall(transport, "http://localhost", AUTH_TOKEN, **kwargs).start()


def order_call(app, order=ORDER, **kwargs) -> EmulatedCall:
    """A whole call: new request, order number, confirmed, delivery, connected."""
    return place_call(app, **kwargs).press("1").press(order).press("1").press("1").silence()


def csrf_from(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def sign_in(client, login="ivanova", password=ADMIN_PASSWORD, next_url=None):
    token = csrf_from(client.get("/console/login").get_data(as_text=True))
    data = {"login": login, "password": password, "csrf_token": token}
    if next_url:
        data["next"] = next_url
    return client.post("/console/login", data=data)


@pytest.fixture
def admin(app):
    client = app.test_client()
    assert sign_in(client).status_code == 302
    return client


@pytest.fixture
def operator(app):
    client = app.test_client()
    assert sign_in(client, "petrov", OPERATOR_PASSWORD).status_code == 302
    return client


def token_of(client) -> str:
    return csrf_from(client.get("/console/").get_data(as_text=True))


def text(response) -> str:
    return response.get_data(as_text=True)


def audit_rows(db, action=None) -> list[dict]:
    rows = audit_store.list_audit(db, limit=1000)
    return [row for row in rows if action is None or row["action"] == action]


# Sign-in and access -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/console",
        "/console/",
        "/console/calls",
        "/console/calls?q=4207315890",
        "/console/calls.csv",
        "/console/live",
        "/console/calls/CA00000000000000000000000000000000",
        "/console/tickets",
        "/console/tickets/100000008",
        "/console/operators",
        "/console/operators/1",
        "/console/audit",
        "/console/recordings/RE00000000000000000000000000000000",
    ],
)
def test_nothing_under_console_without_signing_in(app, path):
    order_call(app)
    response = app.test_client().get(path)
    assert response.status_code in (301, 302, 308)
    assert "/console/login" in response.headers["Location"] or path == "/console"
    assert "4567" not in text(response) and "Иванова" not in text(response)


def test_live_json_wants_a_session(app):
    response = app.test_client().get("/console/live.json")
    assert response.status_code == 401 and response.json == {"error": "sign in"}


def test_sign_in_lands_where_the_operator_was_going(app):
    client = app.test_client()
    first = client.get("/console/tickets?status=open")
    assert first.headers["Location"].endswith("/console/login?next=/console/tickets?status%3Dopen")
    response = sign_in(client, next_url="/console/tickets?status=open")
    assert (
        response.status_code == 302
        and response.headers["Location"] == "/console/tickets?status=open"
    )
    assert client.get("/console/tickets").status_code == 200


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"],
)
def test_sign_in_never_redirects_off_the_console(app, target):
    response = sign_in(app.test_client(), next_url=target)
    assert response.status_code == 302 and response.headers["Location"] == "/console/"


def test_wrong_password_and_unknown_login_get_the_same_answer(app, db):
    client = app.test_client()
    wrong = sign_in(client, "ivanova", "not-the-password")
    unknown = sign_in(client, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Неверный логин или пароль" in text(wrong) and "Неверный логин или пароль" in text(
        unknown
    )
    assert client.get("/console/calls").status_code == 302
    attempts = db.execute("SELECT login, ok FROM login_attempts ORDER BY id").fetchall()
    assert [tuple(row) for row in attempts] == [("ivanova", 0), ("nobody", 0)]


def test_new_passwords_get_full_strength_scrypt():
    stored = accounts.hash_password(ADMIN_PASSWORD)
    assert stored.startswith("scrypt:32768:8:1$") and ADMIN_PASSWORD not in stored
    assert stored != accounts.hash_password(ADMIN_PASSWORD)  # salted
    assert accounts.verify_password(stored, ADMIN_PASSWORD)
    assert not accounts.verify_password(stored, ADMIN_PASSWORD + "x")
    assert not accounts.verify_password(None, ADMIN_PASSWORD)


def test_an_operator_without_a_password_cannot_sign_in(app, db):
    with database.write_transaction(db):
        roster_store.set_operator_password(
            db, roster_store.operator_by_login(db, "petrov")["id"], None
        )
    assert sign_in(app.test_client(), "petrov", "").status_code in (400, 401)
    assert sign_in(app.test_client(), "petrov", OPERATOR_PASSWORD).status_code == 401


def test_session_cookie_is_httponly_samesite_lax_and_scoped(app):
    response = sign_in(app.test_client())
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie


def test_session_cookie_is_secure_behind_https(make_app):
    app = make_app(operators=console_operators(), public_url="https://ivr.example.ru")
    cookie = sign_in(app.test_client()).headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_secret_key_is_made_once_in_the_instance_folder(make_app, tmp_path):
    first = make_app(operators=None)
    key_file = tmp_path / "secret-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.config["SECRET_KEY"] == key_file.read_text().strip()
    assert len(first.config["SECRET_KEY"]) >= 64
    assert make_app(operators=None).config["SECRET_KEY"] == first.config["SECRET_KEY"]


def test_a_configured_secret_key_is_used_and_no_file_is_made(tmp_path):
    app = create_app(
        {"db_path": str(tmp_path / "db" / "ivr.sqlite3"), "secret_key": "k" * 40, "now": None}
    )
    assert app.config["SECRET_KEY"] == "k" * 40
    assert not (tmp_path / "db" / "secret-key").exists()


def test_sign_out_ends_the_session(admin):
    admin.post("/console/logout", data={"csrf_token": token_of(admin)})
    assert admin.get("/console/calls").status_code == 302


def test_security_headers(admin):
    headers = admin.get("/console/calls").headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"


# Throttling --------------------------------------------------------------------------------


def test_sign_in_is_throttled_after_repeated_failures(app, db):
    client = app.test_client()
    for _ in range(accounts.MAX_FAILURES_PER_LOGIN):
        assert sign_in(client, "ivanova", "guess").status_code == 401
    locked = sign_in(client, "ivanova", ADMIN_PASSWORD)
    assert locked.status_code == 429 and "Слишком много неудачных попыток" in text(locked)
    assert client.get("/console/calls").status_code == 302
    # Another operator is not locked out by attempts on ivanova.
    assert sign_in(app.test_client(), "petrov", OPERATOR_PASSWORD).status_code == 302
    # Once the window has passed since the failures, the right password works again.
    window = accounts.THROTTLE_WINDOW + timedelta(minutes=1)
    earlier = database.timestamp(datetime.now(UTC) - window)
    with database.write_transaction(db):
        db.execute("UPDATE login_attempts SET at = ? WHERE login = 'ivanova'", [earlier])
    assert sign_in(client, "ivanova", ADMIN_PASSWORD).status_code == 302


def test_a_success_resets_the_failure_count(app):
    client = app.test_client()
    for _ in range(accounts.MAX_FAILURES_PER_LOGIN - 1):
        sign_in(client, "ivanova", "guess")
    assert sign_in(client, "ivanova", ADMIN_PASSWORD).status_code == 302
    other = app.test_client()
    for _ in range(accounts.MAX_FAILURES_PER_LOGIN - 1):
        assert sign_in(other, "ivanova", "guess").status_code == 401


def test_one_address_guessing_many_logins_is_throttled(app):
    client = app.test_client()
    for index in range(accounts.MAX_FAILURES_PER_ADDRESS):
        assert sign_in(client, f"user{index}", "guess").status_code == 401
    assert sign_in(client, "petrov", OPERATOR_PASSWORD).status_code == 429


# CSRF --------------------------------------------------------------------------------------


def test_state_changes_without_the_csrf_token_are_refused(app, admin, db):
    ticket = ticket_store.ticket_for_call(db, order_call(app).result.call_sid)["number"]
    for data in ({"status": "resolved"}, {"status": "resolved", "csrf_token": "forged"}):
        response = admin.post(f"/console/tickets/{ticket}/status", data=data)
        assert response.status_code == 400 and "Форма устарела" in text(response)
    assert ticket_store.get_ticket(db, ticket)["status"] == "open"
    refused = admin.post(f"/console/tickets/{ticket}/notes", data={"body": "x"})
    assert refused.status_code == 400 and not ticket_store.ticket_notes(db, ticket)
    refused = admin.post(
        "/console/operators",
        data={"full_name": "X", "login": "xx", "endpoint": "+79990000009", "languages": "ru"},
    )
    assert refused.status_code == 400 and len(roster_store.list_operators(db)) == 2
    # The same change with the session's token goes through.
    good = admin.post(
        f"/console/tickets/{ticket}/status",
        data={"status": "resolved", "csrf_token": token_of(admin)},
    )
    assert good.status_code == 303 and ticket_store.get_ticket(db, ticket)["status"] == "resolved"


def test_sign_in_form_needs_the_csrf_token_too(app):
    response = app.test_client().post(
        "/console/login", data={"login": "ivanova", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 400


def test_a_token_from_another_session_is_refused(app, admin, operator, db):
    ticket = ticket_store.ticket_for_call(db, order_call(app).result.call_sid)["number"]
    response = operator.post(
        f"/console/tickets/{ticket}/status",
        data={"status": "resolved", "csrf_token": token_of(admin)},
    )
    assert response.status_code == 400 and ticket_store.get_ticket(db, ticket)["status"] == "open"


def test_twilio_webhooks_stay_exempt_from_csrf(app, db):
    call = order_call(app)  # signed webhooks, no session, no CSRF token
    assert call.result.ended and ticket_store.ticket_for_call(db, call.result.call_sid)


# Roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/operators", "/console/operators/1", "/console/audit"])
def test_operators_cannot_open_admin_pages(operator, admin, path):
    response = operator.get(path)
    assert response.status_code == 403 and "только администраторам" in text(response)
    assert admin.get(path).status_code == 200


def test_operators_cannot_change_the_roster_or_reveal_numbers(app, operator, db):
    call = order_call(app)
    token = token_of(operator)
    added = operator.post(
        "/console/operators",
        data={
            "csrf_token": token,
            "full_name": "Взломщик",
            "login": "mallory",
            "endpoint": "+79990000009",
            "languages": "ru",
            "shift_start": "08:00",
            "shift_end": "20:00",
        },
    )
    assert added.status_code == 403 and roster_store.operator_by_login(db, "mallory") is None
    password = operator.post(
        "/console/operators/1/password",
        data={"csrf_token": token, "password": "x" * 12, "password_repeat": "x" * 12},
    )
    assert password.status_code == 403
    revealed = operator.post(
        f"/console/calls/{call.result.call_sid}/reveal", data={"csrf_token": token}
    )
    assert revealed.status_code == 403 and CALLER not in text(revealed)
    assert "Операторы" not in text(operator.get("/console/"))  # no roster link in the menu


# Call log, search, CSV ------------------------------------------------------------------------


def test_call_log_newest_first_with_masked_numbers_in_moscow_time(app, admin):
    first = order_call(app)
    second = place_call(app, from_="+79031112233").press("0")
    page = text(admin.get("/console/calls"))
    assert page.index(second.result.call_sid) < page.index(first.result.call_sid)
    assert "***4567" in page and "***2233" in page
    assert CALLER not in page and "+79031112233" not in page
    assert "26.11.2026 12:00:00" in page  # OPEN_NOW is 12:00 Moscow time
    assert "соединён с оператором" in page and "Иванова Мария Сергеевна" in page


def test_search_by_order_ticket_and_caller_digits(app, admin, db):
    first = order_call(app)
    second = order_call(app, order=OTHER_ORDER, from_="+79031112233")
    ticket = ticket_store.ticket_for_call(db, second.result.call_sid)["number"]

    def found(query: str) -> set[str]:
        page = text(admin.get("/console/calls", query_string={"q": query}))
        return {sid for sid in (first.result.call_sid, second.result.call_sid) if sid in page}

    assert found(ORDER) == {first.result.call_sid}
    assert found("420-731-5890") == {first.result.call_sid}
    assert found("4207") == {first.result.call_sid}  # the start of an order number
    assert found(ticket) == {second.result.call_sid}
    assert found("2233") == {second.result.call_sid}  # the caller's last digits
    assert found("+7 916 123-45-67") == {first.result.call_sid}
    assert found("0000000000") == set()


def test_an_operator_cannot_learn_a_callers_number_digit_by_digit(app, operator, db):
    """The search oracle: operators see ***4567; '<d>4567' for d = 0..9 must not tell d."""
    call = order_call(app)
    ticket = ticket_store.ticket_for_call(db, call.result.call_sid)["number"]
    lists = (("/console/calls", call.result.call_sid), ("/console/tickets", ticket))
    known = CALLER[-4:]
    for _ in range(3):  # three digits past the ones on the screen, as an attacker would go
        for path, needle in lists:
            hits = [
                digit
                for digit in "0123456789"
                if needle in text(operator.get(path, query_string={"q": digit + known}))
            ]
            assert hits in ([], list("0123456789")), f"{path} tells the digit before {known}"
        known = CALLER[-len(known) - 1] + known  # suppose the attacker learned it anyway
    for path, needle in lists:  # what operators may do: the last four, the whole number
        for query in (CALLER[-4:], CALLER, "+7 916 123-45-67", "8 916 123 45 67"):
            assert needle in text(operator.get(path, query_string={"q": query})), (path, query)
    assert audit_rows(db, "search_numbers") == []


def test_admins_search_by_part_of_a_number_and_it_is_audited_masked(app, admin, db):
    call = order_call(app)
    ticket = ticket_store.ticket_for_call(db, call.result.call_sid)["number"]
    assert call.result.call_sid in text(admin.get("/console/calls?q=1234567"))
    assert ticket in text(admin.get("/console/tickets?q=234567"))
    rows = audit_rows(db, "search_numbers")
    assert [row["detail"]["list"] for row in rows] == ["tickets", "calls"]  # newest first
    assert all(row["detail"]["query"] == "***4567" for row in rows)
    assert "1234567" not in json.dumps([row["detail"] for row in rows])
    admin.get("/console/calls.csv?q=1234567")
    exported = audit_rows(db, "export_calls")[0]["detail"]
    assert exported["filters"]["q"] == "***4567" and "1234567" not in json.dumps(exported)


@pytest.mark.parametrize(
    "query",
    [
        "' OR 1=1 --",
        "4207315890' OR '1'='1",
        '" OR ""="',
        "%",
        "_",
        "1; DROP TABLE calls; --",
        "*",
        "NEAR(a b)",
        "\\",
    ],
)
def test_injection_attempts_are_just_searches_that_find_nothing(app, admin, db, query):
    call = order_call(app)
    with database.write_transaction(db):
        ticket_store.set_ticket_description(
            db, call.result.call_sid, "курьер не приехал", None, datetime.now(UTC)
        )
    page = text(admin.get("/console/calls", query_string={"q": query}))
    assert "Звонков не найдено" in page and call.result.call_sid not in page
    tickets = text(admin.get("/console/tickets", query_string={"q": query}))
    assert "Обращений не найдено" in tickets
    assert search.count(db, search.CallFilters()) == 1  # the table is still there


def test_words_search_the_callers_description(app, admin, db):
    call = order_call(app)
    with database.write_transaction(db):
        ticket_store.set_ticket_description(
            db, call.result.call_sid, "курьер не приехал, 100% предоплата", None, datetime.now(UTC)
        )
    assert call.result.call_sid in text(admin.get("/console/calls?q=курьер"))
    assert call.result.call_sid in text(admin.get("/console/calls?q=100%"))
    assert call.result.call_sid not in text(admin.get("/console/calls?q=10_%"))


def test_filters_line_outcome_category_operator_dates_and_mine(app, admin, operator, db):
    domestic = order_call(app)
    english = place_call(app, to=INTERNATIONAL).press("2").press("1").press(OTHER_ORDER)
    english.press("1").press("3").silence()
    menu_hangup = place_call(app).hang_up()
    sids = {"domestic": domestic, "english": english, "menu": menu_hangup}

    def listed(client, **query) -> set[str]:
        page = text(client.get("/console/calls", query_string=query))
        return {name for name, call in sids.items() if call.result.call_sid in page}

    assert listed(admin) == {"domestic", "english", "menu"}
    assert listed(admin, line="international") == {"english"}
    assert listed(admin, category="payment") == {"english"}
    assert listed(admin, outcome="hung_up_in_menu") == {"menu"}
    assert listed(admin, outcome="connected") == {"domestic", "english"}
    assert listed(admin, **{"from": "2026-11-26", "to": "2026-11-26"}) == set(sids)
    assert listed(admin, **{"from": "2026-11-27"}) == set()
    assert listed(admin, to="2026-11-25") == set()
    ivanova = roster_store.operator_by_login(db, "ivanova")["id"]
    assert listed(admin, operator=str(ivanova)) == {"domestic", "english"}
    assert listed(admin, mine="1") == {"domestic", "english"}  # Иванова took both tickets
    assert listed(operator, mine="1") == set()
    # Unknown filter values are ignored rather than passed on; a number that is not one
    # is refused (see test_numbers_in_query_arguments_are_ascii_digits_in_range).
    assert listed(admin, line="1 OR 1=1", outcome="x") == set(sids)
    assert admin.get("/console/calls", query_string={"operator": "1 OR 1=1"}).status_code == 400


def insert_menu_calls(db, count: int) -> None:
    """`count` finished calls on 26.11.2026, one a minute from 08:00 UTC, CA...0 first."""
    for index in range(count):
        at = datetime(2026, 11, 26, 8, tzinfo=UTC) + timedelta(minutes=index)
        call_store.insert_call(
            db,
            {
                "call_sid": f"CA{index:032x}",
                "line": "domestic",
                "from_number": CALLER,
                "started_at": database.timestamp(at),
                "updated_at": database.timestamp(at),
                "ended_at": database.timestamp(at + timedelta(seconds=30)),
                "step": "ended",
                "outcome": "hung_up_in_menu",
            },
        )
    db.conn.commit()


def test_call_log_paginates(app, admin, db):
    insert_menu_calls(db, 55)
    first, second = text(admin.get("/console/calls")), text(admin.get("/console/calls?page=2"))
    assert f"CA{54:032x}" in first and f"CA{4:032x}" not in first
    assert f"CA{4:032x}" in second and "Страница 2 из 2" in second
    assert 'rel="next"' in first and 'rel="prev"' in second


def test_a_long_log_is_counted_up_to_the_limit_and_says_so(app, admin, db, monkeypatch):
    monkeypatch.setattr("ivr.web.console.calls.COUNT_LIMIT", 100)
    insert_menu_calls(db, 130)
    first, last = text(admin.get("/console/calls")), text(admin.get("/console/calls?page=2"))
    assert "Найдено звонков: 100+" in first and "Страница 1 из 2+" in first
    assert 'rel="next"' in first and 'id="narrow-hint"' not in first
    assert "Страница 2 из 2+" in last and 'rel="next"' not in last
    assert 'id="narrow-hint"' in last  # older calls: narrow the dates
    assert f"CA{30:032x}" in last and f"CA{29:032x}" not in last
    found = text(admin.get("/console/calls?from=2026-11-26&to=2026-11-26&outcome=hung_up_in_menu"))
    assert "Найдено звонков: 100+" in found


def test_csv_export_has_the_filtered_calls_masked(app, admin, db):
    connected = order_call(app)
    place_call(app, from_="+79031112233").hang_up()
    response = admin.get("/console/calls.csv?outcome=connected")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert len(rows) == 1
    row = rows[0]
    assert list(row) == list(CALL_FIELDS)
    assert row["call_sid"] == connected.result.call_sid and row["from"] == "***4567"
    assert row["order_number"] == ORDER and row["outcome"] == "connected"
    assert row["started_at"] == "2026-11-26T12:00:00+03:00"
    ticket = ticket_store.ticket_for_call(db, connected.result.call_sid)
    assert row["ticket_number"] == ticket["number"]
    assert CALLER not in response.get_data(as_text=True)
    [export] = audit_rows(db, "export_calls")
    assert export["detail"] == {"filters": {"outcome": "connected"}, "revealed_numbers": False}


def test_csv_export_whole_numbers_only_for_admins(app, admin, operator, db):
    order_call(app)
    assert CALLER in admin.get("/console/calls.csv?reveal=1").get_data(as_text=True)
    assert CALLER not in operator.get("/console/calls.csv?reveal=1").get_data(as_text=True)
    exports = audit_rows(db, "export_calls")
    assert sorted(row["detail"]["revealed_numbers"] for row in exports) == [False, True]


@pytest.mark.parametrize(
    "value, expected",
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("+79161234567", "+79161234567"),
        ("***4567", "***4567"),
        ("Иванова", "Иванова"),
        (None, None),
    ],
)
def test_csv_cells_never_start_a_formula(value, expected):
    assert csv_cell(value) == expected


# Call detail, audit, escaping -----------------------------------------------------------


def test_call_detail_shows_the_timeline_and_ticket_and_is_audited(app, admin, db):
    call = order_call(app)
    ticket = ticket_store.ticket_for_call(db, call.result.call_sid)
    page = text(admin.get(f"/console/calls/{call.result.call_sid}"))
    assert "Ход звонка" in page and "главное меню" in page
    assert "Здравствуйте" in page  # what was said to the caller
    assert f"нажал: {ORDER}" in page  # what the caller pressed
    assert ticket["number"] in page and "открыто" in page
    assert "***4567" in page and CALLER not in page
    [view] = audit_rows(db, "view_call")
    assert view["target"] == call.result.call_sid and view["operator_login"] == "ivanova"


def test_admin_reveals_a_number_and_it_is_audited(app, admin, db):
    call = order_call(app)
    url = f"/console/calls/{call.result.call_sid}"
    assert "Показать номер" in text(admin.get(url))
    revealed = admin.post(url + "/reveal", data={"csrf_token": token_of(admin)})
    assert revealed.status_code == 200 and CALLER in text(revealed)
    [row] = audit_rows(db, "reveal_number")
    assert row["target"] == call.result.call_sid and row["operator_login"] == "ivanova"


def test_unknown_call_and_ticket_are_404(admin):
    assert admin.get("/console/calls/CA" + "0" * 32).status_code == 404
    assert admin.get("/console/tickets/123456789").status_code == 404


def test_a_script_from_the_caller_or_recogniser_renders_as_text(app, admin, operator, db):
    call = order_call(app)
    sid = call.result.call_sid
    script = "<script>alert('x')</script>"
    ticket = ticket_store.ticket_for_call(db, sid)["number"]
    with database.write_transaction(db):
        ticket_store.set_ticket_description(db, sid, script, 0.9, datetime.now(UTC))
        call_store.add_event(
            db, sid, 99, datetime.now(UTC), "input", "category", {"speech": script}
        )
        db.execute(
            "INSERT INTO recognitions (call_sid, purpose, language, mode, model, status, ok, "
            "text, confidence, created_at) VALUES (?, 'description', 'ru', 'free', ?, 'done', 1, "
            "?, 0.87, ?)",
            [sid, "vosk-<b>model</b>", script, database.timestamp(datetime.now(UTC))],
        )
        call_store.update_call(db, sid, {"operator_name": script})
    operator.post(
        f"/console/tickets/{ticket}/notes", data={"body": script, "csrf_token": token_of(operator)}
    )
    pages = [
        text(admin.get(f"/console/calls/{sid}")),
        text(admin.get(f"/console/tickets/{ticket}")),
        text(admin.get("/console/tickets")),
        text(admin.get("/console/calls")),
    ]
    for page in pages:
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(" in page
    assert "&lt;b&gt;model&lt;/b&gt;" in pages[0] and "87%" in pages[0]


def test_recognitions_show_text_confidence_mode_and_model(app, admin, db):
    call = order_call(app)
    with database.write_transaction(db):
        db.execute(
            "INSERT INTO recognitions (call_sid, purpose, language, mode, model, status, ok, "
            "text, digits, confidence, created_at) VALUES (?, 'order_number', 'ru', 'grammar', "
            "'vosk-model-small-ru-0.22', 'done', 1, 'четыре два ноль', '420', 0.934, ?)",
            [call.result.call_sid, database.timestamp(datetime.now(UTC))],
        )
    page = text(admin.get(f"/console/calls/{call.result.call_sid}"))
    assert "четыре два ноль" in page and "93%" in page
    assert "grammar" in page and "vosk-model-small-ru-0.22" in page


# Tickets --------------------------------------------------------------------------------------


def assign_to_petrov(db, ticket: str) -> None:
    """Operators change only their own tickets (and unassigned ones): make this one petrov's."""
    petrov = roster_store.operator_by_login(db, "petrov")
    with database.write_transaction(db):
        db.execute(
            "UPDATE tickets SET operator_id = ?, operator_name = ? WHERE number = ?",
            [petrov["id"], petrov["full_name"], ticket],
        )


def test_ticket_status_change_and_notes_are_audited(app, operator, db):
    call = order_call(app)
    ticket = ticket_store.ticket_for_call(db, call.result.call_sid)["number"]
    assign_to_petrov(db, ticket)
    page = text(operator.get(f"/console/tickets/{ticket}"))
    assert "Перевести в «в работе»" in page
    response = operator.post(
        f"/console/tickets/{ticket}/status",
        data={"status": "in_progress", "csrf_token": token_of(operator)},
    )
    assert response.status_code == 303
    assert ticket_store.get_ticket(db, ticket)["status"] == "in_progress"
    assert "Статус изменён: в работе" in text(operator.get(f"/console/tickets/{ticket}"))
    operator.post(
        f"/console/tickets/{ticket}/notes",
        data={"body": "Перезвонил, курьер будет завтра", "csrf_token": token_of(operator)},
    )
    [note] = ticket_store.ticket_notes(db, ticket)
    assert note["body"] == "Перезвонил, курьер будет завтра" and note["author_login"] == "petrov"
    [status_row] = audit_rows(db, "ticket_status")
    assert status_row["target"] == ticket and status_row["operator_login"] == "petrov"
    assert status_row["detail"] == {"from": "open", "to": "in_progress"}
    [note_row] = audit_rows(db, "ticket_note")
    assert note_row["detail"] == {"note_id": note["id"]}


def test_bad_status_and_empty_or_huge_notes_are_refused(app, operator, db):
    ticket = ticket_store.ticket_for_call(db, order_call(app).result.call_sid)["number"]
    assign_to_petrov(db, ticket)
    token = token_of(operator)
    operator.post(
        f"/console/tickets/{ticket}/status", data={"status": "closed", "csrf_token": token}
    )
    operator.post(f"/console/tickets/{ticket}/notes", data={"body": "  ", "csrf_token": token})
    operator.post(
        f"/console/tickets/{ticket}/notes", data={"body": "x" * 4001, "csrf_token": token}
    )
    assert ticket_store.get_ticket(db, ticket)["status"] == "open"
    assert ticket_store.ticket_notes(db, ticket) == [] and audit_rows(db, "ticket_status") == []


def test_operators_change_only_their_own_or_unassigned_tickets(app, admin, operator, db):
    ticket = ticket_store.ticket_for_call(db, order_call(app).result.call_sid)["number"]
    assert ticket_store.get_ticket(db, ticket)["operator_name"].startswith("Иванова")
    page = text(operator.get(f"/console/tickets/{ticket}"))
    assert 'id="ticket-locked"' in page and "менять его могут только он и администраторы" in page
    assert re.search(r'data-status="in_progress" disabled', page)
    token = token_of(operator)
    status = {"status": "resolved", "csrf_token": token}
    assert operator.post(f"/console/tickets/{ticket}/status", data=status).status_code == 403
    note = {"body": "not mine", "csrf_token": token}
    assert operator.post(f"/console/tickets/{ticket}/notes", data=note).status_code == 403
    assert ticket_store.get_ticket(db, ticket)["status"] == "open"
    assert ticket_store.ticket_notes(db, ticket) == [] and audit_rows(db, "ticket_status") == []
    # An admin may change anyone's ticket; an operator a ticket with no operator.
    assert 'id="ticket-locked"' not in text(admin.get(f"/console/tickets/{ticket}"))
    status["csrf_token"] = token_of(admin)
    assert admin.post(f"/console/tickets/{ticket}/status", data=status).status_code == 303
    with database.write_transaction(db):
        db.execute("UPDATE tickets SET operator_id = NULL, operator_name = NULL")
    reopen = {"status": "open", "csrf_token": token_of(operator)}
    assert operator.post(f"/console/tickets/{ticket}/status", data=reopen).status_code == 303
    assert ticket_store.get_ticket(db, ticket)["status"] == "open"


def test_the_ivr_status_menu_reads_the_status_set_in_the_console(app, operator, db):
    ticket = ticket_store.ticket_for_call(db, order_call(app).result.call_sid)["number"]
    assign_to_petrov(db, ticket)
    operator.post(
        f"/console/tickets/{ticket}/status",
        data={"status": "in_progress", "csrf_token": token_of(operator)},
    )
    status_call = place_call(app).press("2").press(ticket + "#")
    assert "Статус: в работе" in status_call.result.transcript


def test_ticket_list_filters_and_mine(app, admin, operator, db):
    call = order_call(app)
    ticket = ticket_store.ticket_for_call(db, call.result.call_sid)["number"]
    assert ticket in text(admin.get("/console/tickets?status=open"))
    assert ticket not in text(admin.get("/console/tickets?status=resolved"))
    assert ticket in text(admin.get("/console/tickets?mine=1"))
    assert ticket not in text(operator.get("/console/tickets?mine=1"))
    assert ticket in text(admin.get(f"/console/tickets?q={ORDER}"))
    assert ticket in text(admin.get("/console/tickets?q=4567"))
    assert ticket not in text(admin.get("/console/tickets?callbacks=1"))


# Roster ---------------------------------------------------------------------------------------


def roster_form(token: str, **changes) -> dict:
    form = {
        "csrf_token": token,
        "full_name": "Кузнецова Анна Павловна",
        "name_en": "Anna Kuznetsova",
        "login": "kuznetsova",
        "role": "operator",
        "languages": ["ru", "en"],
        "endpoint": "+79991112233",
        "shift_start": "10:00",
        "shift_end": "19:00",
        "password": "anna-password-1",
        "password_repeat": "anna-password-1",
    }
    form.update(changes)
    return form


def test_admin_adds_edits_and_deactivates_an_operator(app, admin, db):
    response = admin.post("/console/operators", data=roster_form(token_of(admin)))
    assert response.status_code == 303
    added = roster_store.operator_by_login(db, "kuznetsova")
    assert added["languages"] == "ru,en" and added["shift_start"] == "10:00"
    assert added["password_hash"].startswith("scrypt:")
    anna = app.test_client()
    assert sign_in(anna, "kuznetsova", "anna-password-1").status_code == 302

    url = f"/console/operators/{added['id']}"
    form = roster_form(token_of(admin), languages=["ru"], shift_start="12:00", shift_end="21:00")
    del form["password"], form["password_repeat"]
    assert admin.post(url, data=form).status_code == 303
    edited = roster_store.operator_by_login(db, "kuznetsova")
    assert (edited["languages"], edited["shift_start"], edited["shift_end"]) == (
        "ru",
        "12:00",
        "21:00",
    )

    admin.post(url + "/active", data={"active": "0", "csrf_token": token_of(admin)})
    assert roster_store.operator_by_login(db, "kuznetsova")["active"] == 0
    assert anna.get("/console/calls").status_code == 302  # the session ends with the account
    assert sign_in(app.test_client(), "kuznetsova", "anna-password-1").status_code == 401

    actions = [row["action"] for row in audit_rows(db) if row["target"] == str(added["id"])]
    assert actions == ["operator_deactivate", "operator_edit", "operator_add"]
    [edit] = audit_rows(db, "operator_edit")
    assert edit["detail"]["changed"]["languages"] == ["ru,en", "ru"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"endpoint": "12345"}, "Номер в формате +E.164"),
        ({"login": "Bad Login!"}, "Логин: 2–40"),
        ({"login": "petrov"}, "Этот логин уже занят"),
        ({"languages": ["de"]}, "Языки: ru и/или en"),
        ({"shift_start": "25:00"}, "Смена в виде 08:00-20:00"),
        ({"full_name": ""}, "ФИО: от 1 до 200 символов"),
        ({"password_repeat": "other-password"}, "Пароли не совпадают"),
        ({"password": "short", "password_repeat": "short"}, "не короче 8 символов"),
    ],
)
def test_roster_form_rejects_bad_input(app, admin, db, changes, message):
    response = admin.post("/console/operators", data=roster_form(token_of(admin), **changes))
    assert response.status_code == 400 and message in text(response)
    assert roster_store.operator_by_login(db, "kuznetsova") is None


def test_admin_cannot_lock_themselves_out(app, admin, db):
    me = roster_store.operator_by_login(db, "ivanova")
    admin.post(
        f"/console/operators/{me['id']}/active", data={"active": "0", "csrf_token": token_of(admin)}
    )
    form = roster_form(token_of(admin), login="ivanova", role="operator")
    response = admin.post(f"/console/operators/{me['id']}", data=form)
    assert response.status_code == 400
    again = roster_store.operator_by_login(db, "ivanova")
    assert again["active"] == 1 and again["role"] == "admin"


def test_a_new_password_ends_the_operators_sessions(app, admin, operator, db):
    petrov = roster_store.operator_by_login(db, "petrov")
    admin.post(
        f"/console/operators/{petrov['id']}/password",
        data={
            "password": "new-password-1",
            "password_repeat": "new-password-1",
            "csrf_token": token_of(admin),
        },
    )
    assert operator.get("/console/calls").status_code == 302
    assert sign_in(app.test_client(), "petrov", "new-password-1").status_code == 302
    assert admin.get("/console/calls").status_code == 200
    [row] = audit_rows(db, "operator_password")
    assert row["target"] == str(petrov["id"])


def test_operator_page_lists_their_open_tickets(app, admin, db):
    ticket = ticket_store.ticket_for_call(db, order_call(app).result.call_sid)["number"]
    ivanova = roster_store.operator_by_login(db, "ivanova")
    assert ticket in text(admin.get(f"/console/operators/{ivanova['id']}"))
    roster = text(admin.get("/console/operators"))
    assert "Кузнецова" not in roster and "Петров Алексей Николаевич" in roster


# Recordings -----------------------------------------------------------------------------------


@pytest.fixture
def recordings_app(make_app, tmp_path, monkeypatch):
    """An app whose recordings live in tmp_path/recordings (with or without the setting)."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    if "recordings_dir" in {field.name for field in fields(Settings)}:
        app = make_app(operators=console_operators(), recordings_dir=str(folder))
    else:
        monkeypatch.chdir(tmp_path)
        folder = tmp_path / "instance" / "recordings"
        folder.mkdir(parents=True)
        app = make_app(operators=console_operators())
    return app, folder


def add_recording(db, call_sid: str, sid: str, local_path: str | None) -> None:
    now = database.timestamp(datetime.now(UTC))
    with database.write_transaction(db):
        db.execute(
            "INSERT INTO recordings (sid, call_sid, purpose, status, local_path, created_at, "
            "updated_at) VALUES (?, ?, 'description', 'stored', ?, ?, ?)",
            [sid, call_sid, local_path, now, now],
        )


def test_recordings_are_served_only_to_signed_in_users(recordings_app, db_path):
    app, folder = recordings_app
    db = database.connect(db_path)
    call = order_call(app)
    audio = folder / call.result.call_sid / "RE1.wav"
    audio.parent.mkdir()
    audio.write_bytes(b"RIFF0000WAVEfmt fake audio")
    add_recording(db, call.result.call_sid, "RE" + "1" * 32, str(audio))
    url = "/console/recordings/RE" + "1" * 32
    assert app.test_client().get(url).status_code == 302
    client = app.test_client()
    sign_in(client, "petrov", OPERATOR_PASSWORD)
    response = client.get(url)
    assert response.status_code == 200 and response.mimetype == "audio/wav"
    assert response.get_data() == b"RIFF0000WAVEfmt fake audio"
    page = text(client.get(f"/console/calls/{call.result.call_sid}"))
    assert f'<audio controls preload="none" src="{url}">' in page


def test_recordings_outside_the_folder_are_never_served(recordings_app, db_path, tmp_path):
    app, folder = recordings_app
    db = database.connect(db_path)
    call = order_call(app)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not for the console")
    (folder / "link.wav").symlink_to(secret)
    paths = {
        "RE" + "a" * 32: "/etc/passwd",
        "RE" + "b" * 32: str(secret),
        "RE" + "c" * 32: str(folder / ".." / "secret.wav"),
        "RE" + "d" * 32: str(folder / "link.wav"),
        "RE" + "e" * 32: os.path.relpath(secret),
        "RE" + "f" * 32: None,
        "RE" + "0" * 32: str(folder / "missing.wav"),
    }
    for sid, local_path in paths.items():
        add_recording(db, call.result.call_sid, sid, local_path)
    client = app.test_client()
    sign_in(client)
    for sid in paths:
        response = client.get(f"/console/recordings/{sid}")
        assert response.status_code == 404, sid
        assert b"not for the console" not in response.get_data()
    for attempt in (
        "/console/recordings/..%2F..%2Fetc%2Fpasswd",
        "/console/recordings/../../etc/passwd",
        "/console/recordings/%2Fetc%2Fpasswd",
        "/console/recordings/" + str(secret),
    ):
        response = client.get(attempt)
        assert response.status_code == 404, attempt
        assert b"root:" not in response.get_data()


# Live, dashboard, language --------------------------------------------------------------------


def test_live_view_lists_calls_in_progress(app, admin):
    live = place_call(app).press("1")
    ended = order_call(app)
    data = admin.get("/console/live.json").json
    sids = [row["call_sid"] for row in data["calls"]]
    assert live.result.call_sid in sids and ended.result.call_sid not in sids
    [row] = data["calls"]
    assert row["step"] == "ввод номера заказа" and row["caller"] == "***4567"
    page = text(admin.get("/console/live"))
    assert "console-live.js" in page and live.result.call_sid in page
    live.hang_up()
    assert admin.get("/console/live.json").json["calls"] == []


def test_dashboard_draws_todays_calls_callbacks_and_speech(make_app, db_path):
    open_app = make_app(operators=console_operators())
    order_call(open_app)
    international = place_call(open_app, to=INTERNATIONAL).press("1")  # Russian
    international.press("1").press(OTHER_ORDER).press("1").press("2").silence()
    place_call(open_app).hang_up()
    closed_app = create_app(
        {
            "db_path": db_path,
            "auth_token": AUTH_TOKEN,
            "now": datetime.fromisoformat("2026-11-26T21:30:00+03:00"),
        }
    )
    place_call(closed_app).press("1").press(ORDER).press("1").press("2").silence()
    with database.connect(db_path) as db, database.write_transaction(db):
        call_sid = call_store.list_calls(db, limit=1)[0]["call_sid"]
        for ok in (1, 1, 1, 0):
            db.execute(
                "INSERT INTO recognitions (call_sid, purpose, language, status, ok, created_at) "
                "VALUES (?, 'order_number', 'ru', 'done', ?, ?)",
                [call_sid, ok, "2026-11-26T09:00:00.000+00:00"],
            )
    client = open_app.test_client()
    sign_in(client)
    page = text(client.get("/console/"))
    assert "Сводка за сегодня · 26.11.2026" in page
    assert page.count("<svg") >= 4
    calls_tile = page.split('id="tile-calls"')[1].split("</section>")[0]
    assert '<p class="big">4</p>' in calls_tile  # the 21:30 call is today too
    reached = page.split('id="tile-reached"')[1].split("</section>")[0]
    assert ">50%<" in reached  # 2 of 4 reached an operator
    callbacks = page.split('id="tile-callbacks"')[1].split("</section>")[0]
    assert '<p class="big">1</p>' in callbacks
    speech = page.split('id="tile-speech"')[1].split("</section>")[0]
    assert ">75%<" in speech and "3/4" in speech
    assert "12: 8 800 (Россия) 2" in page  # two domestic calls in the 12:00 column tooltip


def test_russian_by_default_english_on_request(admin):
    assert "Журнал звонков" in text(admin.get("/console/calls"))
    token = token_of(admin)
    response = admin.post(
        "/console/language", data={"lang": "en", "next": "/console/calls", "csrf_token": token}
    )
    assert response.headers["Location"] == "/console/calls"
    page = text(admin.get("/console/calls"))
    assert "Call log" in page and 'lang="en"' in page and "Журнал звонков" not in page
    admin.post("/console/language", data={"lang": "xx", "csrf_token": token})
    assert "Call log" in text(admin.get("/console/calls"))


def test_language_choice_survives_sign_in(app):
    client = app.test_client()
    token = csrf_from(text(client.get("/console/login")))
    client.post("/console/language", data={"lang": "en", "csrf_token": token})
    assert "Sign in to the console" in text(client.get("/console/login"))
    sign_in(client)
    assert "Call log" in text(client.get("/console/calls"))


@pytest.mark.parametrize(
    "stored, shown",
    [
        ("2026-11-26T09:00:00.000+00:00", "26.11.2026 12:00:00"),
        ("2026-12-31T21:30:00.000+00:00", "01.01.2027 00:30:00"),
        ("2026-11-27T08:00:00+03:00", "27.11.2026 08:00:00"),
        (None, "—"),
        ("garbage", "garbage"),
    ],
)
def test_times_are_shown_in_moscow_time(stored, shown):
    assert format_moscow(stored) == shown


# CLI and demo accounts ----------------------------------------------------------------------


@pytest.fixture
def run(db_path, monkeypatch):
    monkeypatch.setenv("IVR_DB", db_path)

    def invoke(*args, input=None):
        return CliRunner().invoke(cli.main, list(args), input=input, catch_exceptions=False)

    return invoke


def test_cli_add_with_password_from_stdin_then_sign_in(run, db_path, make_app):
    result = run(
        "operators",
        "add",
        "Кузнецова Анна Павловна",
        "--endpoint",
        "+79991112233",
        "--login",
        "Kuznetsova",
        "--admin",
        "--password-stdin",
        input="anna-password-1\n",
    )
    assert result.exit_code == 0, result.output
    with database.connect(db_path) as db:
        row = roster_store.operator_by_login(db, "kuznetsova")
    assert row["role"] == "admin" and row["password_hash"].startswith("scrypt:")
    assert "anna-password-1" not in row["password_hash"]
    app = make_app(operators=None)
    assert sign_in(app.test_client(), "kuznetsova", "anna-password-1").status_code == 302


def test_cli_set_password_prompts_twice_and_checks_length(run, db_path):
    run("operators", "add", "Кузнецова Анна", "--endpoint", "+79991112233", "--login", "anna")
    with database.connect(db_path) as db:
        assert roster_store.operator_by_login(db, "anna")["password_hash"] is None
    short = run("operators", "set-password", "anna", input="short\nshort\n")
    assert short.exit_code != 0 and "8-256 characters" in short.output
    result = run("operators", "set-password", "anna", input="long-enough-1\nlong-enough-1\n")
    assert result.exit_code == 0, result.output
    with database.connect(db_path) as db:
        stored = roster_store.operator_by_login(db, "anna")["password_hash"]
    assert accounts.verify_password(stored, "long-enough-1")
    assert run("operators", "set-password", "nobody", input="x\n").exit_code != 0
    assert (
        run("operators", "add", "X", "--endpoint", "+79991112234", "--password-stdin").exit_code
        != 0
    )


def test_init_db_demo_writes_private_credentials_and_stores_only_hashes(run, db_path, tmp_path):
    result = run("init-db", "--demo")
    assert result.exit_code == 0 and "demo-accounts.txt" in result.output
    accounts_file = tmp_path / "demo-accounts.txt"
    assert stat.S_IMODE(accounts_file.stat().st_mode) == 0o600
    lines = [
        line.split("\t")
        for line in accounts_file.read_text().splitlines()
        if not line.startswith("#")
    ]
    passwords = {login: password for login, password, _role in lines}
    assert set(passwords) == {"ivanova", "petrov", "smirnova"}
    assert len(set(passwords.values())) == 3 and all(len(p) >= 12 for p in passwords.values())
    with database.connect(db_path) as db:
        for login, password in passwords.items():
            stored = roster_store.operator_by_login(db, login)["password_hash"]
            assert stored.startswith("scrypt:") and password not in stored
            assert accounts.verify_password(stored, password)
        assert roster_store.operator_by_login(db, "ivanova")["role"] == "admin"
        assert roster_store.operator_by_login(db, "petrov")["role"] == "operator"
    before = accounts_file.read_text()
    assert run("init-db", "--demo").exit_code == 0
    assert accounts_file.read_text() == before  # passwords are made once


def test_local_server_still_seeds_the_demo_roster_without_passwords():
    with LocalServer() as server, database.connect(server.db_path) as db:
        roster = roster_store.list_operators(db)
        assert [row["login"] for row in roster] == ["ivanova", "petrov", "smirnova"]
        assert all(row["password_hash"] is None for row in roster)


def test_every_console_message_exists_in_both_languages():
    from ivr.web.i18n import LABELS, MESSAGES

    assert set(MESSAGES["ru"]) == set(MESSAGES["en"])
    for group in LABELS["ru"]:
        assert set(LABELS["ru"][group]) == set(LABELS["en"][group]), group


def test_audit_page_lists_who_did_what(app, admin, db):
    call = order_call(app)
    admin.get(f"/console/calls/{call.result.call_sid}")
    page = text(admin.get("/console/audit"))
    assert "просмотр звонка" in page and call.result.call_sid in page and "вход" in page
    assert json.loads(json.dumps(audit_rows(db)[0]["detail"])) == {}


@pytest.mark.parametrize(
    "value, maximum",
    [(0, 2), (1, 2), (2, 2), (3, 4), (4, 4), (5, 10), (9, 10), (11, 20), (33, 40), (45, 100)],
)
def test_chart_axis_maximum_has_a_whole_middle_line(value, maximum):
    from ivr.web.charts import nice_maximum

    assert nice_maximum(value) == maximum and maximum % 2 == 0


# Query arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/console/calls?page=²",
        "/console/calls?operator=²",
        "/console/tickets?operator=¹",
        "/console/tickets?page=٣",
        "/console/calls.csv?operator=²",
        "/console/audit?page=²",
        "/console/calls?page=" + "9" * 5000,
        "/console/calls?operator=" + "1" * 5000,
        "/console/audit?page=" + "1" * 5000,
        "/console/calls?page=0",
        "/console/calls?page=-1",
        "/console/calls?page=201",
        "/console/calls?operator=%201",
        "/console/tickets?operator=99999999999",
    ],
)
def test_numbers_in_query_arguments_are_ascii_digits_in_range(admin, path):
    response = admin.get(path)
    assert response.status_code == 400
    assert "Неверный адрес страницы" in text(response)


def test_numbers_in_range_still_work(admin, operator):
    assert admin.get("/console/calls?page=1&operator=1").status_code == 200
    assert admin.get("/console/calls?page=200").status_code == 200
    assert admin.get("/console/calls?page=&operator=").status_code == 200  # empty: any
    assert admin.get("/console/audit?page=1000").status_code == 200
    assert operator.get("/console/tickets?page=2&operator=2&mine=1").status_code == 200


# Every argument any console page reads, and a few it does not.
QUERY_NAMES = (
    "page", "operator", "mine", "q", "from", "to", "line", "outcome", "category", "status",
    "callbacks", "reveal", "next", "lang", "x",
)  # fmt: skip
HOSTILE_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["²", "¹", "٣", "１", "-1", "0", "1e3", " 1", "1 ", "0x1", "nan", "+1"]),
    st.integers(min_value=0, max_value=6000).map(lambda digits: "9" * digits),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.dates().map(str),
)
QUERIES = st.dictionaries(
    st.one_of(st.sampled_from(QUERY_NAMES), st.text(min_size=1, max_size=8)),
    HOSTILE_VALUES,
    max_size=5,
)


def console_get_paths(app, db) -> list[str]:
    """Every GET route of the console, with real values for its path arguments."""
    call = call_store.get_call(db, order_call(app).result.call_sid)
    values = {
        "call_sid": call["call_sid"],
        "number": call["ticket_number"],
        "operator_id": "1",
        "sid": "RE" + "0" * 32,
    }
    paths = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("console.") and "GET" in rule.methods:
            paths.append(rule.build({name: values[name] for name in rule.arguments})[1])
    return sorted(paths)


def test_no_console_page_answers_500_to_any_query_arguments(app, admin, db):
    paths = console_get_paths(app, db)
    assert {"/console/calls", "/console/calls.csv", "/console/tickets", "/console/audit"} <= set(
        paths
    )

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(path=st.sampled_from(paths), query=QUERIES)
    def check(path, query):
        response = admin.get(path, query_string=query)
        if path.endswith(".csv"):
            response.get_data()  # the export streams: run it to the end
        assert response.status_code < 500, (path, query)

    check()

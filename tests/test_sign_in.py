"""Signing in and out: throttling that holds under parallel requests and cannot lock others
out; server-side sessions that end at sign-out, password change, deactivation and expiry."""

from __future__ import annotations

import hashlib
import http.client
import re
import threading
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from test_console import (
    ADMIN_PASSWORD,
    OPERATOR_PASSWORD,
    audit_rows,
    console_operators,
    csrf_from,
    text,
)

from ivr import accounts, cli
from ivr import db as database
from ivr.db import operators as roster_store
from ivr.devserver import LocalServer
from ivr.hours import Clock

STRANGER = "203.0.113.66"
OFFICE = "198.51.100.10"


@pytest.fixture
def app(make_app):
    return make_app(operators=console_operators())


def client_from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def attempt(client, login: str, password: str):
    token = csrf_from(text(client.get("/console/login")))
    return client.post(
        "/console/login", data={"login": login, "password": password, "csrf_token": token}
    )


# One atomic step: parallel guesses -------------------------------------------------------


def _post_form(port: int, path: str, cookie: str, form: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = urllib.parse.urlencode(form)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    connection.request("POST", path, body, headers)
    status = connection.getresponse().status
    connection.close()
    return status


def test_parallel_wrong_passwords_check_at_most_the_limit(tmp_path):
    """31 guesses at once on real HTTP: only the limit's worth reach the password check."""
    db_path = str(tmp_path / "ivr.sqlite3")
    with LocalServer(db_path=db_path, demo_roster=False, threads=32) as server:
        with database.connect(server.db_path) as db:
            operator = {**console_operators()[1], "created_at": "2026-01-01T00:00:00+00:00"}
            operator["password_hash"] = accounts.hash_password(OPERATOR_PASSWORD)  # full strength
            roster_store.insert_operator(db, operator)
            db.conn.commit()
        port = server.server.effective_port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/console/login")
        response = connection.getresponse()
        cookie = response.getheader("Set-Cookie").split(";")[0]
        token = csrf_from(response.read().decode())
        connection.close()
        form = {"login": "petrov", "password": "wrong-guess", "csrf_token": token}
        statuses: list[int] = []
        start = threading.Barrier(31)

        def guess():
            start.wait()
            statuses.append(_post_form(port, "/console/login", cookie, form))

        threads = [threading.Thread(target=guess) for _ in range(31)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(set(statuses)) == [401, 429]
        assert statuses.count(401) == accounts.MAX_FAILURES_PER_LOGIN
        with database.connect(server.db_path) as db:
            checked = db.execute("SELECT count(*) FROM login_attempts WHERE ok = 0").fetchone()[0]
        assert checked == accounts.MAX_FAILURES_PER_LOGIN


# Per account and address together --------------------------------------------------------


def test_a_stranger_cannot_lock_an_operator_out(app):
    stranger = client_from(app, STRANGER)
    for _ in range(accounts.MAX_FAILURES_PER_LOGIN):
        assert attempt(stranger, "petrov", "guess").status_code == 401
    assert attempt(stranger, "petrov", OPERATOR_PASSWORD).status_code == 429
    # The operator, from their own desk, signs in as usual.
    assert attempt(client_from(app, OFFICE), "petrov", OPERATOR_PASSWORD).status_code == 302


def test_guessing_from_many_addresses_is_capped_except_where_the_operator_signed_in(app):
    office = client_from(app, OFFICE)
    assert attempt(office, "petrov", OPERATOR_PASSWORD).status_code == 302
    ceiling = accounts.MAX_FAILURES_PER_LOGIN_FROM_NEW_ADDRESSES
    for index in range(ceiling):
        address = f"203.0.113.{index // (accounts.MAX_FAILURES_PER_LOGIN - 1)}"
        assert attempt(client_from(app, address), "petrov", "guess").status_code == 401
    assert attempt(client_from(app, "192.0.2.200"), "petrov", OPERATOR_PASSWORD).status_code == 429
    assert attempt(client_from(app, OFFICE), "petrov", OPERATOR_PASSWORD).status_code == 302


def test_an_admin_unlocks_a_locked_account_from_the_command_line(app, db_path, monkeypatch, db):
    office = client_from(app, OFFICE)
    for _ in range(accounts.MAX_FAILURES_PER_LOGIN):
        attempt(office, "ivanova", "guess")
    assert attempt(office, "ivanova", ADMIN_PASSWORD).status_code == 429
    monkeypatch.setenv("IVR_DB", db_path)
    result = CliRunner().invoke(cli.main, ["operators", "unlock", "ivanova"])
    assert result.exit_code == 0, result.output
    assert f"cleared {accounts.MAX_FAILURES_PER_LOGIN} failed sign-in" in result.output
    assert attempt(office, "ivanova", ADMIN_PASSWORD).status_code == 302
    [row] = audit_rows(db, "sign_in_unlock")
    assert row["target"] == "ivanova" and row["operator_id"] is None
    assert row["detail"] == {"cleared": accounts.MAX_FAILURES_PER_LOGIN}
    # The failed attempts stay on record; they just no longer count.
    assert db.execute("SELECT count(*) FROM login_attempts WHERE ok = 0").fetchone()[0] == 5


def test_unlock_names_an_unknown_login_in_one_line(db_path, monkeypatch):
    monkeypatch.setenv("IVR_DB", db_path)
    result = CliRunner().invoke(cli.main, ["operators", "unlock", "nobody"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no operator with login 'nobody'"


def test_the_locked_message_says_how_long(app):
    stranger = client_from(app, STRANGER)
    for _ in range(accounts.MAX_FAILURES_PER_LOGIN):
        attempt(stranger, "petrov", "guess")
    page = text(attempt(stranger, "petrov", "guess"))
    minutes = int(re.search(r"(\d+)\s*мин", page).group(1))
    assert 0 < minutes <= accounts.THROTTLE_WINDOW / timedelta(minutes=1)


def test_failures_before_the_window_do_not_count(app, db):
    stranger = client_from(app, STRANGER)
    for _ in range(accounts.MAX_FAILURES_PER_LOGIN):
        attempt(stranger, "petrov", "guess")
    earlier = database.timestamp(datetime.now(UTC) - accounts.THROTTLE_WINDOW - timedelta(1))
    with database.write_transaction(db):
        db.execute("UPDATE login_attempts SET at = ?", [earlier])
    assert attempt(stranger, "petrov", OPERATOR_PASSWORD).status_code == 302


# Server-side sessions ---------------------------------------------------------------------


class MovableClock:
    """The app's wall clock, moved by the test instead of by waiting."""

    def __init__(self):
        self.instant = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.instant

    def advance(self, **delta) -> None:
        self.instant += timedelta(**delta)


@pytest.fixture
def clock(app):
    moving = MovableClock()
    app.extensions["ivr.wall_clock"] = Clock(source=moving)
    return moving


def signed_in(app, login="petrov", password=OPERATOR_PASSWORD):
    client = client_from(app, OFFICE)
    assert attempt(client, login, password).status_code == 302
    return client


def cookie_of(client) -> str:
    return client.get_cookie("ivr_console", path="/console").value


def with_cookie(app, value: str):
    client = client_from(app, OFFICE)
    client.set_cookie("ivr_console", value, path="/console")
    return client


def test_a_cookie_saved_before_sign_out_no_longer_works(app):
    client = signed_in(app)
    saved = cookie_of(client)
    assert with_cookie(app, saved).get("/console/calls").status_code == 200
    token = csrf_from(text(client.get("/console/")))
    assert client.post("/console/logout", data={"csrf_token": token}).status_code == 302
    assert with_cookie(app, saved).get("/console/calls").status_code == 302


def test_a_session_ends_after_12_hours_however_much_it_is_used(app, clock):
    client = signed_in(app)
    saved = cookie_of(client)
    for _ in range(23):  # a request every half hour for eleven and a half hours
        clock.advance(minutes=30)
        response = client.get("/console/calls")
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers  # use does not renew the cookie
    clock.advance(minutes=31)
    assert client.get("/console/calls").status_code == 302
    assert with_cookie(app, saved).get("/console/calls").status_code == 302


def test_an_idle_session_ends_after_the_configured_minutes(make_app):
    app = make_app(operators=console_operators(), session_idle_minutes=20)
    moving = MovableClock()
    app.extensions["ivr.wall_clock"] = Clock(source=moving)
    client = signed_in(app)
    moving.advance(minutes=19)
    assert client.get("/console/calls").status_code == 200
    moving.advance(minutes=19)  # 38 minutes after sign-in, 19 after the last use
    assert client.get("/console/calls").status_code == 200
    moving.advance(minutes=21)
    assert client.get("/console/calls").status_code == 302


def test_deactivation_ends_the_operators_sessions(app, db):
    operator = signed_in(app)
    admin = signed_in(app, "ivanova", ADMIN_PASSWORD)
    petrov = roster_store.operator_by_login(db, "petrov")
    token = csrf_from(text(admin.get("/console/")))
    admin.post(
        f"/console/operators/{petrov['id']}/active", data={"active": "0", "csrf_token": token}
    )
    assert operator.get("/console/calls").status_code == 302
    admin.post(
        f"/console/operators/{petrov['id']}/active", data={"active": "1", "csrf_token": token}
    )
    assert operator.get("/console/calls").status_code == 302  # reactivation does not revive it


def test_a_password_set_from_the_command_line_ends_the_sessions(app, db_path, monkeypatch):
    operator = signed_in(app)
    monkeypatch.setenv("IVR_DB", db_path)
    result = CliRunner().invoke(
        cli.main, ["operators", "set-password", "petrov", "--password-stdin"], input="another-1\n"
    )
    assert result.exit_code == 0, result.output
    assert operator.get("/console/calls").status_code == 302


def test_an_admin_who_changes_their_own_password_stays_signed_in_elsewhere_not(app, db):
    here, elsewhere = (
        signed_in(app, "ivanova", ADMIN_PASSWORD),
        signed_in(app, "ivanova", ADMIN_PASSWORD),
    )
    me = roster_store.operator_by_login(db, "ivanova")
    token = csrf_from(text(here.get("/console/")))
    form = {"password": "brand-new-pass", "password_repeat": "brand-new-pass", "csrf_token": token}
    here.post(f"/console/operators/{me['id']}/password", data=form)
    assert here.get("/console/calls").status_code == 200
    assert elsewhere.get("/console/calls").status_code == 302


def test_session_ids_are_stored_only_as_hashes(app, db):
    client = signed_in(app)
    serializer = app.session_interface.get_signing_serializer(app)
    session_id = serializer.loads(cookie_of(client))["sid"]
    [stored] = db.execute("SELECT id_hash FROM console_sessions").fetchall()
    assert stored[0] == hashlib.sha256(session_id.encode()).hexdigest() != session_id

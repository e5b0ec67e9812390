"""Signing in: throttling that holds under parallel requests and cannot lock others out."""

from __future__ import annotations

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

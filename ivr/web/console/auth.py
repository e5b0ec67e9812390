"""Signing in and out, and the console's language."""

from __future__ import annotations

import logging
from datetime import datetime

from flask import g, redirect, render_template, request, session, url_for

from ivr import accounts
from ivr import db as database
from ivr.db import audit as audit_store
from ivr.db import operators as roster_store
from ivr.db import sessions as session_store
from ivr.vocabulary import AuditAction
from ivr.web.console.base import audited, bp, safe_next, start_operator_session, wall_now
from ivr.web.console.formatting import t
from ivr.web.context import get_db
from ivr.web.i18n import LANGUAGES

log = logging.getLogger("ivr.console")


def _claim_attempt(login: str, remote_addr: str | None, now: datetime) -> tuple[int, int]:
    """Check the throttle and count this attempt as a failure in one write transaction.

    Returns (minutes to wait, 0 when the attempt may go ahead; the attempt's id). Parallel
    attempts queue on the write lock, so no more than the limit ever reach the password
    check; the attempt is marked a success afterwards if the password was right.
    """
    db = get_db()
    with database.write_transaction(db):
        failures = audit_store.sign_in_failures(
            db,
            login,
            remote_addr,
            since=now - accounts.THROTTLE_WINDOW,
            known_since=now - accounts.KNOWN_ADDRESS_AGE,
        )
        wait_minutes = accounts.sign_in_wait(failures, now)
        if wait_minutes:
            return wait_minutes, 0
        return 0, audit_store.record_login_attempt(db, login, remote_addr, now, ok=False)


def _login_page(next_url: str, login: str, error: str, status: int):
    page = render_template("console/login.html", next_url=next_url, login=login, error=error)
    return page, status


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form; a good login starts a fresh server-side session."""
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.operator is not None:
            return redirect(next_url)
        return render_template("console/login.html", next_url=next_url, login="")
    login_name = request.form.get("login", "").strip().lower()[:100]
    password = request.form.get("password", "")[: accounts.MAX_PASSWORD_LENGTH + 1]
    now, remote_addr = wall_now(), request.remote_addr
    wait_minutes, attempt_id = _claim_attempt(login_name, remote_addr, now)
    if wait_minutes:
        log.warning(
            "sign-in throttled",
            extra={"login": login_name, "remote_addr": remote_addr, "minutes": wait_minutes},
        )
        return _login_page(next_url, login_name, t("too_many_attempts", minutes=wait_minutes), 429)
    operator = roster_store.operator_by_login(get_db(), login_name) if login_name else None
    ok = accounts.verify_password(operator["password_hash"] if operator else None, password)
    ok = ok and bool(operator and operator["active"])
    if not ok:
        log.info("sign-in failed", extra={"login": login_name, "remote_addr": remote_addr})
        return _login_page(next_url, login_name, t("wrong_credentials"), 401)
    detail = {"remote_addr": remote_addr}
    with audited(AuditAction.SIGN_IN, login_name, detail, operator_id=operator["id"]) as change:
        audit_store.mark_login_succeeded(change.db, attempt_id)
        start_operator_session(change.db, operator["id"], change.now)
    return redirect(next_url)


@bp.post("/logout")
def logout():
    """Sign out: the session ends server-side (a POST with the CSRF token)."""
    with audited(AuditAction.SIGN_OUT, g.operator["login"]) as change:
        session_store.end_session(change.db, session["sid"])
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language
    return redirect(url_for("console.login"))


@bp.post("/language")
def set_language():
    """Switch the console between Russian and English (kept in the session)."""
    choice = request.form.get("lang")
    if choice in LANGUAGES:
        session["lang"] = choice
    return redirect(safe_next(request.form.get("next")))

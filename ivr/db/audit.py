"""The audit trail and the sign-in attempts behind the console's throttling."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ivr.db import core
from ivr.db.core import Database, timestamp


def add_audit(
    db: Database,
    at: datetime,
    operator_id: int | None,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one row to the audit trail."""
    db.execute(
        "INSERT INTO audit_log (at, operator_id, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        [timestamp(at), operator_id, action, target, json.dumps(detail or {}, ensure_ascii=False)],
    )


def list_audit(db: Database, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """The audit trail, newest first, with who did it."""
    found = core.rows(
        db.execute(
            """
            SELECT a.*, o.full_name AS operator_full_name, o.login AS operator_login
            FROM audit_log a LEFT JOIN operators o ON o.id = a.operator_id
            ORDER BY a.id DESC LIMIT ? OFFSET ?
            """,
            [limit, offset],
        )
    )
    for entry in found:
        entry["detail"] = json.loads(entry["detail"])
    return found


def count_audit(db: Database) -> int:
    """How many rows the audit trail holds."""
    return db.execute("SELECT count(*) FROM audit_log").fetchone()[0]


def record_login_attempt(
    db: Database, login: str, remote_addr: str | None, at: datetime, ok: bool
) -> int:
    """Remember one sign-in attempt (for throttling and the audit trail); returns its id."""
    cursor = db.execute(
        "INSERT INTO login_attempts (login, remote_addr, at, ok) VALUES (?, ?, ?, ?)",
        [login, remote_addr, timestamp(at), int(ok)],
    )
    return cursor.lastrowid


def mark_login_succeeded(db: Database, attempt_id: int) -> None:
    """The attempt, counted as a failure while its password was checked, succeeded."""
    db.execute("UPDATE login_attempts SET ok = 1 WHERE id = ?", [attempt_id])


# Failures that count: inside the window, not cleared by an admin, and (per login) after the
# login's latest success. Three counts, each (count, latest failure).
_SIGN_IN_FAILURES = {
    "login_and_address": """
        SELECT count(*), max(at) FROM login_attempts
        WHERE login = :login AND remote_addr IS :address
        AND ok = 0 AND cleared_at IS NULL AND at >= :since
        AND at > coalesce((SELECT max(at) FROM login_attempts WHERE login = :login AND ok = 1), '')
    """,
    "address": """
        SELECT count(*), max(at) FROM login_attempts
        WHERE remote_addr IS :address AND ok = 0 AND cleared_at IS NULL AND at >= :since
    """,
    "login_from_new_addresses": """
        SELECT count(*), max(at) FROM login_attempts AS failure
        WHERE login = :login AND ok = 0 AND cleared_at IS NULL AND at >= :since
        AND at > coalesce((SELECT max(at) FROM login_attempts WHERE login = :login AND ok = 1), '')
        AND NOT EXISTS (
            SELECT 1 FROM login_attempts WHERE login = :login AND ok = 1
            AND remote_addr IS :address AND at >= :known_since)
        AND NOT EXISTS (
            SELECT 1 FROM login_attempts WHERE login = :login AND ok = 1
            AND remote_addr IS failure.remote_addr AND at >= :known_since)
    """,
}


def sign_in_failures(
    db: Database, login: str, remote_addr: str | None, since: datetime, known_since: datetime
) -> dict[str, tuple[int, str | None]]:
    """Failed sign-ins that count toward throttling, each as (count, latest):

    `login_and_address`: this login from this address; `address`: any login from this
    address; `login_from_new_addresses`: this login from addresses where it has not
    signed in successfully since `known_since` (0 when this address is such a place).
    """
    params = {
        "login": login,
        "address": remote_addr,
        "since": timestamp(since),
        "known_since": timestamp(known_since),
    }
    return {
        name: tuple(db.execute(sql, params).fetchone()) for name, sql in _SIGN_IN_FAILURES.items()
    }


def clear_login_failures(db: Database, login: str, at: datetime) -> int:
    """An admin's unlock: the login's failures stop counting (they stay on record)."""
    cursor = db.execute(
        "UPDATE login_attempts SET cleared_at = ? "
        "WHERE login = ? AND ok = 0 AND cleared_at IS NULL",
        [timestamp(at), login],
    )
    return cursor.rowcount

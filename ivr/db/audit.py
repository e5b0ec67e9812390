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
) -> None:
    """Remember one sign-in attempt (for throttling and the audit trail)."""
    db.execute(
        "INSERT INTO login_attempts (login, remote_addr, at, ok) VALUES (?, ?, ?, ?)",
        [login, remote_addr, timestamp(at), int(ok)],
    )


def login_failures(db: Database, login: str, since: datetime) -> tuple[int, str | None]:
    """Failed sign-ins for a login since `since` and its last success: (count, latest)."""
    found = db.execute(
        """
        SELECT count(*), max(at) FROM login_attempts
        WHERE login = ? AND ok = 0 AND at >= ? AND at > coalesce(
            (SELECT max(at) FROM login_attempts WHERE login = ? AND ok = 1), '')
        """,
        [login, timestamp(since), login],
    ).fetchone()
    return found[0], found[1]


def address_failures(db: Database, remote_addr: str, since: datetime) -> tuple[int, str | None]:
    """Failed sign-ins from one address since `since`: (count, latest)."""
    found = db.execute(
        "SELECT count(*), max(at) FROM login_attempts WHERE remote_addr = ? AND ok = 0 AND at >= ?",
        [remote_addr, timestamp(since)],
    ).fetchone()
    return found[0], found[1]

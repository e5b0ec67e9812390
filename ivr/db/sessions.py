"""Console sessions kept server-side: the cookie holds a random id, the table its SHA-256.

A session ends at sign-out, when its operator's password changes or the operator is
deactivated (all their sessions), after an absolute lifetime that use does not extend,
and after an idle time with no request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from ivr.db import core
from ivr.db.core import Database, timestamp

# A session's last use is written at most this often (the live view polls every few seconds).
TOUCH_INTERVAL = timedelta(minutes=1)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_session(
    db: Database, operator_id: int, now: datetime, lifetime: timedelta, idle: timedelta
) -> str:
    """A new session for the operator; returns the id the cookie carries (stored hashed).

    Sessions that have ended on their own are swept at the same time.
    """
    db.execute(
        "DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at <= ?",
        [timestamp(now), timestamp(now - idle)],
    )
    session_id = secrets.token_urlsafe(32)
    core.insert(
        db,
        "console_sessions",
        {
            "id_hash": _digest(session_id),
            "operator_id": operator_id,
            "created_at": timestamp(now),
            "last_seen_at": timestamp(now),
            "expires_at": timestamp(now + lifetime),
        },
    )
    return session_id


def session_operator(
    db: Database, session_id: str, now: datetime, idle: timedelta
) -> dict[str, Any] | None:
    """The active operator of a live session, or None; notes the use (at most each minute)."""
    found = core.row(
        db.execute(
            """
            SELECT o.*, s.last_seen_at AS session_last_seen_at
            FROM console_sessions s JOIN operators o ON o.id = s.operator_id
            WHERE s.id_hash = ? AND s.expires_at > ? AND s.last_seen_at > ?
            AND o.active = 1 AND o.password_hash IS NOT NULL
            """,
            [_digest(session_id), timestamp(now), timestamp(now - idle)],
        )
    )
    if found is None:
        return None
    if found.pop("session_last_seen_at") <= timestamp(now - TOUCH_INTERVAL):
        with core.write_transaction(db):
            db.execute(
                "UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?",
                [timestamp(now), _digest(session_id)],
            )
    return found


def end_session(db: Database, session_id: str) -> None:
    """End one session (sign-out)."""
    db.execute("DELETE FROM console_sessions WHERE id_hash = ?", [_digest(session_id)])


def end_operator_sessions(db: Database, operator_id: int) -> int:
    """End every session of an operator (new password, deactivation); returns how many."""
    cursor = db.execute("DELETE FROM console_sessions WHERE operator_id = ?", [operator_id])
    return cursor.rowcount

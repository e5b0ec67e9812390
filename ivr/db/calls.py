"""Calls, their timelines, and the webhooks' stored answers (exactly-once delivery)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ivr.db import core
from ivr.db.core import Database, json_text, timestamp


def get_call(db: Database, call_sid: str) -> dict[str, Any] | None:
    """One call row, or None."""
    return core.row(db.execute("SELECT * FROM calls WHERE call_sid = ?", [call_sid]))


def current_seq(db: Database, call_sid: str) -> int:
    """The call's step counter (0 for a call not on record)."""
    found = db.execute("SELECT seq FROM calls WHERE call_sid = ?", [call_sid]).fetchone()
    return found[0] if found else 0


def insert_call(db: Database, call: dict[str, Any]) -> None:
    """Record a new call."""
    core.insert(db, "calls", call)


def update_call(db: Database, call_sid: str, changes: dict[str, Any]) -> None:
    """Change some columns of a call."""
    core.update(db, "calls", ("call_sid", call_sid), changes)


def add_event(
    db: Database,
    call_sid: str,
    seq: int,
    at: datetime,
    kind: str,
    step: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one entry to a call's timeline."""
    add_events(db, call_sid, at, [(seq, kind, step, detail)])


def add_event_at_current_seq(
    db: Database,
    call_sid: str,
    at: datetime,
    kind: str,
    step: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry at the call's step counter as it stands: for what happens to a call
    outside its own webhooks (the dispatcher, reconciling, SMS statuses, leaving the queue)."""
    add_event(db, call_sid, current_seq(db, call_sid), at, kind, step, detail)


def add_events(
    db: Database,
    call_sid: str,
    at: datetime,
    entries: Iterable[tuple[int, str, str | None, dict[str, Any] | None]],
) -> None:
    """Append (seq, kind, step, detail) entries to a call's timeline in one statement."""
    values = [
        (call_sid, seq, timestamp(at), kind, step, json_text(detail or {}))
        for seq, kind, step, detail in entries
    ]
    if not values:
        return
    placeholders = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(values))
    db.execute(
        f"INSERT INTO events (call_sid, seq, at, kind, step, detail) VALUES {placeholders}",  # noqa: S608
        [value for entry in values for value in entry],
    )


def call_events(db: Database, call_sid: str) -> list[dict[str, Any]]:
    """A call's timeline, oldest first."""
    found = core.rows(db.execute("SELECT * FROM events WHERE call_sid = ? ORDER BY id", [call_sid]))
    for event in found:
        event["detail"] = json.loads(event["detail"])
    return found


def list_calls(db: Database, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """The call log, newest first."""
    return core.rows(
        db.execute(
            "SELECT * FROM calls ORDER BY started_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [limit, offset],
        )
    )


def stored_response(db: Database, key: str) -> str | None:
    """The TwiML already sent for this webhook delivery, if it was handled before."""
    found = db.execute("SELECT twiml FROM webhook_responses WHERE key = ?", [key]).fetchone()
    return found[0] if found else None


def store_response(db: Database, key: str, call_sid: str, twiml: str, at: datetime) -> None:
    """Remember the answer to a webhook delivery so a retry gets the same TwiML."""
    db.execute(
        "INSERT INTO webhook_responses (key, call_sid, twiml, created_at) VALUES (?, ?, ?, ?)",
        [key, call_sid, twiml, timestamp(at)],
    )


def operator_on_call(db: Database, operator_id: int, except_call: str) -> bool:
    """Whether the operator is being dialled or talking on another live call."""
    found = db.execute(
        """
        SELECT 1 FROM calls
        WHERE operator_id = ? AND outcome = 'connecting' AND ended_at IS NULL
          AND call_sid != ?
        LIMIT 1
        """,
        [operator_id, except_call],
    ).fetchone()
    return found is not None

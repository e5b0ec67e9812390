"""Deleting a period's or a caller's calls with everything recorded about them (152-FZ)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ivr.db import core
from ivr.db.core import Database, timestamp

# What goes, children first (foreign keys), each selected through the calls being deleted.
_DELETIONS = (
    ("recognitions", "DELETE FROM recognitions WHERE call_sid IN (SELECT sid FROM temp.doomed)"),
    ("recordings", "DELETE FROM recordings WHERE call_sid IN (SELECT sid FROM temp.doomed)"),
    ("events", "DELETE FROM events WHERE call_sid IN (SELECT sid FROM temp.doomed)"),
    (
        "webhook_responses",
        "DELETE FROM webhook_responses WHERE call_sid IN (SELECT sid FROM temp.doomed)",
    ),
    (
        "ticket_notes",
        "DELETE FROM ticket_notes WHERE ticket_number IN "
        "(SELECT number FROM tickets WHERE call_sid IN (SELECT sid FROM temp.doomed))",
    ),
    ("tickets", "DELETE FROM tickets WHERE call_sid IN (SELECT sid FROM temp.doomed)"),
    ("calls", "DELETE FROM calls WHERE call_sid IN (SELECT sid FROM temp.doomed)"),
)


def select_calls(
    db: Database, before: datetime | None, caller: str | None, live_since: datetime
) -> int:
    """Mark the calls to delete (started before `before`, from `caller`; both if both given).

    Calls still in progress (not ended, started after `live_since`) are left alone.
    Returns how many were marked; call inside the transaction that deletes them.
    """
    db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (sid TEXT PRIMARY KEY)")
    db.execute("DELETE FROM temp.doomed")
    db.execute(
        """
        INSERT INTO temp.doomed (sid)
        SELECT call_sid FROM calls
        WHERE (:before IS NULL OR started_at < :before)
        AND (:caller IS NULL OR from_number = :caller)
        AND NOT (ended_at IS NULL AND started_at >= :live_since)
        """,
        {
            "before": timestamp(before) if before else None,
            "caller": caller,
            "live_since": timestamp(live_since),
        },
    )
    return db.execute("SELECT count(*) FROM temp.doomed").fetchone()[0]


def marked_recordings(db: Database) -> list[dict[str, Any]]:
    """The recording rows of the marked calls (to find their files)."""
    return core.rows(
        db.execute("SELECT * FROM recordings WHERE call_sid IN (SELECT sid FROM temp.doomed)")
    )


def delete_marked(db: Database) -> dict[str, int]:
    """Delete the marked calls and all rows about them; returns the count per table."""
    counts = {table: db.execute(sql).rowcount for table, sql in _DELETIONS}
    db.execute("DELETE FROM temp.doomed")
    return counts

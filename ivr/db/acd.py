"""The ACD's records: operators' presence, their legs, queued callers, callbacks and SMS.

Instants here are real elapsed time (the wall clock), never IVR_NOW's business clock: a
reservation expires, a caller waits and a retry comes due in real seconds.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from ivr.db import core
from ivr.db.core import Database, timestamp

LIVE_LEG = "state != 'ended'"


# Presence ------------------------------------------------------------------------------


def set_presence(db: Database, operator_id: int, presence: str, at: datetime) -> bool:
    """Set an operator available or away; False when nothing changed."""
    cursor = db.execute(
        "UPDATE operators SET presence = ?, presence_changed_at = ? WHERE id = ? AND presence != ?",
        [presence, timestamp(at), operator_id, presence],
    )
    return cursor.rowcount == 1


def operator_engaged(db: Database, operator_id: int) -> bool:
    """Whether the operator has a leg being rung or answered (busy, derived from the legs)."""
    found = db.execute(
        f"SELECT 1 FROM operator_legs WHERE operator_id = ? AND {LIVE_LEG} LIMIT 1",  # noqa: S608
        [operator_id],
    ).fetchone()
    return found is not None


def free_operators(db: Database, rested_since: str | None = None) -> list[dict[str, Any]]:
    """Active, available operators with no live leg and no direct <Dial> under way, and
    (with `rested_since`) none whose phone went unanswered, busy or failed since then: a
    phone that just rang in vain is not rung again at once for the next caller.

    Each row has `open_tickets`; shifts and languages are the caller's to check.
    """
    return core.rows(
        db.execute(
            f"""
            SELECT o.*, (
                SELECT count(*) FROM tickets t
                WHERE t.operator_id = o.id AND t.status != 'resolved'
            ) AS open_tickets
            FROM operators o
            WHERE o.active = 1 AND o.presence = 'available'
              AND NOT EXISTS (
                SELECT 1 FROM operator_legs l WHERE l.operator_id = o.id AND l.{LIVE_LEG}
              )
              AND NOT EXISTS (
                SELECT 1 FROM calls c
                WHERE c.operator_id = o.id AND c.outcome = 'connecting' AND c.ended_at IS NULL
              )
              AND NOT EXISTS (
                SELECT 1 FROM operator_legs l
                WHERE l.operator_id = o.id AND l.state = 'ended' AND l.answered_at IS NULL
                  AND l.result IN ('busy', 'no-answer', 'failed') AND l.ended_at > ?
              )
            ORDER BY o.id
            """,  # noqa: S608
            [rested_since or ""],
        )
    )


def languages_on_roster(db: Database) -> set[str]:
    """Every language some active operator speaks (available or not)."""
    found = set()
    for (languages,) in db.execute("SELECT languages FROM operators WHERE active = 1"):
        found.update(part.strip() for part in languages.split(",") if part.strip())
    return found


# Legs ----------------------------------------------------------------------------------


def insert_leg(db: Database, leg: dict[str, Any]) -> bool:
    """Reserve an operator: False when they (or the caller) already have a live leg."""
    try:
        core.insert(db, "operator_legs", leg)
    except sqlite3.IntegrityError as error:
        if "operator_legs" in str(error):
            return False
        raise
    return True


def get_leg(db: Database, sid: str) -> dict[str, Any] | None:
    """One leg by our id."""
    return core.row(db.execute("SELECT * FROM operator_legs WHERE sid = ?", [sid]))


def update_leg(db: Database, sid: str, changes: dict[str, Any]) -> None:
    """Change some columns of a leg."""
    core.update(db, "operator_legs", ("sid", sid), changes)


def expire_reservations(db: Database, now: datetime) -> list[dict[str, Any]]:
    """End the legs still ringing past their reservation (the operator never answered)."""
    expired = core.rows(
        db.execute(
            "SELECT * FROM operator_legs WHERE state = 'ringing' AND reserved_until < ?",
            [timestamp(now)],
        )
    )
    for leg in expired:
        update_leg(
            db,
            leg["sid"],
            {
                "state": "ended",
                "result": leg["result"] or "expired",
                "ended_at": timestamp(now),
                "updated_at": timestamp(now),
            },
        )
    return expired


def claim_leg_to_place(db: Database, sid: str, now: datetime, lease_until: datetime) -> bool:
    """Take the job of placing a reserved leg (one worker only; the lease covers a crash)."""
    cursor = db.execute(
        "UPDATE operator_legs SET next_attempt_at = ?, attempts = attempts + 1, updated_at = ? "
        "WHERE sid = ? AND state = 'ringing' AND call_sid IS NULL AND next_attempt_at <= ?",
        [timestamp(lease_until), timestamp(now), sid, timestamp(now)],
    )
    return cursor.rowcount == 1


def legs_to_place(db: Database, now: datetime, limit: int = 20) -> list[dict[str, Any]]:
    """Reserved legs not placed yet whose (re)try is due."""
    return core.rows(
        db.execute(
            "SELECT * FROM operator_legs WHERE state = 'ringing' AND call_sid IS NULL "
            "AND next_attempt_at <= ? ORDER BY created_at LIMIT ?",
            [timestamp(now), limit],
        )
    )


def operators_tried(db: Database, caller_call_sid: str) -> dict[int, int]:
    """How often each operator was rung for this caller without answering."""
    return {
        operator_id: count
        for operator_id, count in db.execute(
            "SELECT operator_id, count(*) FROM operator_legs "
            "WHERE caller_call_sid = ? AND state = 'ended' AND answered_at IS NULL "
            "GROUP BY operator_id",
            [caller_call_sid],
        )
    }


def unfinished_legs(db: Database, before: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Placed legs still live that started before `before` (their end may have been lost)."""
    return core.rows(
        db.execute(
            f"SELECT * FROM operator_legs WHERE {LIVE_LEG} AND call_sid IS NOT NULL "  # noqa: S608
            "AND created_at < ? ORDER BY created_at LIMIT ?",
            [timestamp(before), limit],
        )
    )


# The queue -----------------------------------------------------------------------------


def enter_queue(db: Database, entry: dict[str, Any]) -> None:
    """A caller waits (again): a caller put back keeps their place (the first entered_at)."""
    db.execute(
        """
        INSERT INTO queue_entries
            (call_sid, queue_name, language, ticket_number, operator_id, state, entered_at,
             next_attempt_at)
        VALUES (?, ?, ?, ?, ?, 'waiting', ?, ?)
        ON CONFLICT (call_sid) DO UPDATE SET
            queue_name = excluded.queue_name, state = 'waiting', left_at = NULL,
            next_attempt_at = excluded.next_attempt_at
        """,
        [
            entry["call_sid"],
            entry["queue_name"],
            entry["language"],
            entry.get("ticket_number"),
            entry.get("operator_id"),
            entry["entered_at"],
            entry["entered_at"],
        ],
    )


def get_entry(db: Database, call_sid: str) -> dict[str, Any] | None:
    """A caller's queue entry."""
    return core.row(db.execute("SELECT * FROM queue_entries WHERE call_sid = ?", [call_sid]))


def leave_queue(db: Database, call_sid: str, state: str, at: datetime) -> bool:
    """The caller is out of the queue (bridged, left, hung up, gone); False if not waiting."""
    cursor = db.execute(
        "UPDATE queue_entries SET state = ?, left_at = ? WHERE call_sid = ? AND state = 'waiting'",
        [state, timestamp(at), call_sid],
    )
    return cursor.rowcount == 1


def mark_answered(db: Database, call_sid: str, at: datetime) -> None:
    """An operator answered for this caller (speed of answer counts to here)."""
    db.execute(
        "UPDATE queue_entries SET answered_at = ? WHERE call_sid = ? AND answered_at IS NULL",
        [timestamp(at), call_sid],
    )


def defer_entry(db: Database, call_sid: str, until: datetime) -> None:
    """Try this caller again no sooner than `until` (after a failed placement)."""
    db.execute(
        "UPDATE queue_entries SET next_attempt_at = ? WHERE call_sid = ?",
        [timestamp(until), call_sid],
    )


def callers_to_dispatch(db: Database, now: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Waiting callers with no operator being rung for them, longest-waiting first."""
    return core.rows(
        db.execute(
            f"""
            SELECT q.* FROM queue_entries q
            WHERE q.state = 'waiting' AND q.next_attempt_at <= ?
              AND NOT EXISTS (
                SELECT 1 FROM operator_legs l WHERE l.caller_call_sid = q.call_sid AND l.{LIVE_LEG}
              )
            ORDER BY q.entered_at, q.call_sid LIMIT ?
            """,  # noqa: S608
            [timestamp(now), limit],
        )
    )


def queue_position(db: Database, call_sid: str) -> int | None:
    """1 for the next caller of the language to be answered; None if not waiting."""
    entry = get_entry(db, call_sid)
    if entry is None or entry["state"] != "waiting":
        return None
    ahead = db.execute(
        "SELECT count(*) FROM queue_entries WHERE state = 'waiting' AND language = ? "
        "AND (entered_at < ? OR (entered_at = ? AND call_sid < ?))",
        [entry["language"], entry["entered_at"], entry["entered_at"], call_sid],
    ).fetchone()[0]
    return ahead + 1


def average_speed_of_answer(db: Database, since: datetime) -> float | None:
    """Mean seconds from entering the queue to an operator answering, since `since`."""
    found = db.execute(
        "SELECT avg((julianday(answered_at) - julianday(entered_at)) * 86400.0) "
        "FROM queue_entries WHERE answered_at >= ?",
        [timestamp(since)],
    ).fetchone()[0]
    return None if found is None else float(found)


def live_queue(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """Who waits, since when, and which operator is being rung for them (the live view)."""
    return core.rows(
        db.execute(
            f"""
            SELECT q.call_sid, q.language, q.ticket_number, q.entered_at, c.from_number,
                   l.state AS leg_state, o.full_name AS ringing_operator
            FROM queue_entries q
            JOIN calls c ON c.call_sid = q.call_sid
            LEFT JOIN operator_legs l ON l.caller_call_sid = q.call_sid AND l.{LIVE_LEG}
            LEFT JOIN operators o ON o.id = l.operator_id
            WHERE q.state = 'waiting'
            ORDER BY q.entered_at LIMIT ?
            """,  # noqa: S608
            [limit],
        )
    )


# Callbacks -----------------------------------------------------------------------------

CALLBACK_WHERE = (
    "t.status != 'resolved' AND (t.callback_requested_at IS NOT NULL OR t.after_hours = 1)"
)


def request_callback(db: Database, ticket_number: str, at: datetime) -> None:
    """Put a ticket on the callbacks list (the caller left the queue for a callback)."""
    db.execute(
        "UPDATE tickets SET callback_requested_at = ? "
        "WHERE number = ? AND callback_requested_at IS NULL",
        [timestamp(at), ticket_number],
    )


def callbacks(db: Database, limit: int = 200) -> list[dict[str, Any]]:
    """Tickets waiting for a callback, oldest request first, with their attempts."""
    return core.rows(
        db.execute(
            f"""
            SELECT t.*, coalesce(t.callback_requested_at, t.created_at) AS requested_at,
                   EXISTS (
                       SELECT 1 FROM operator_legs l
                       WHERE l.ticket_number = t.number AND l.purpose = 'callback' AND l.{LIVE_LEG}
                   ) AS calling
            FROM tickets t WHERE {CALLBACK_WHERE}
            ORDER BY requested_at, t.number LIMIT ?
            """,  # noqa: S608
            [limit],
        )
    )


def callback_attempts(db: Database, ticket_number: str) -> list[dict[str, Any]]:
    """A ticket's callback legs, oldest first, with who placed them."""
    return core.rows(
        db.execute(
            "SELECT l.*, o.full_name AS operator_name FROM operator_legs l "
            "LEFT JOIN operators o ON o.id = l.operator_id "
            "WHERE l.ticket_number = ? AND l.purpose = 'callback' ORDER BY l.created_at",
            [ticket_number],
        )
    )


def record_callback_result(db: Database, ticket_number: str, result: str, failed: bool) -> None:
    """Count a finished callback attempt on its ticket."""
    db.execute(
        "UPDATE tickets SET callback_attempts = callback_attempts + 1, "
        "callback_failures = callback_failures + ?, callback_result = ? WHERE number = ?",
        [int(failed), result, ticket_number],
    )


# SMS -----------------------------------------------------------------------------------


def add_sms(db: Database, message: dict[str, Any]) -> bool:
    """Queue the ticket's SMS; False when the ticket already has one (at most one each)."""
    return core.insert(db, "sms_messages", message, or_ignore=True).rowcount == 1


def sms_for_ticket(db: Database, ticket_number: str) -> dict[str, Any] | None:
    """The ticket's SMS, if any."""
    return core.row(
        db.execute("SELECT * FROM sms_messages WHERE ticket_number = ?", [ticket_number])
    )


def sms_by_sid(db: Database, message_sid: str) -> dict[str, Any] | None:
    """An SMS by Twilio's MessageSid."""
    return core.row(db.execute("SELECT * FROM sms_messages WHERE message_sid = ?", [message_sid]))


def sms_to_send(db: Database, now: datetime, limit: int = 20) -> list[dict[str, Any]]:
    """Messages waiting to be sent whose (re)try is due."""
    return core.rows(
        db.execute(
            "SELECT * FROM sms_messages WHERE status = 'pending' AND next_attempt_at <= ? "
            "ORDER BY created_at LIMIT ?",
            [timestamp(now), limit],
        )
    )


def claim_sms(db: Database, ticket_number: str, now: datetime, lease_until: datetime) -> bool:
    """Take the job of sending one message (one worker only)."""
    cursor = db.execute(
        "UPDATE sms_messages SET next_attempt_at = ?, attempts = attempts + 1, updated_at = ? "
        "WHERE ticket_number = ? AND status = 'pending' AND next_attempt_at <= ?",
        [timestamp(lease_until), timestamp(now), ticket_number, timestamp(now)],
    )
    return cursor.rowcount == 1


def update_sms(db: Database, ticket_number: str, changes: dict[str, Any]) -> None:
    """Change some columns of a ticket's SMS."""
    core.update(db, "sms_messages", ("ticket_number", ticket_number), changes)


# Reconciliation ------------------------------------------------------------------------


def calls_without_end(db: Database, started_before: str, limit: int = 50) -> list[dict[str, Any]]:
    """Caller calls with no final status on record that started before the given instant."""
    return core.rows(
        db.execute(
            "SELECT call_sid, status, started_at FROM calls "
            "WHERE ended_at IS NULL AND started_at < ? AND simulated_now IS NULL "
            "ORDER BY started_at LIMIT ?",
            [started_before, limit],
        )
    )

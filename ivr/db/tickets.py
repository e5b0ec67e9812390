"""Tickets, their notes and descriptions."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from ivr.db import core
from ivr.db.core import Database, timestamp


def get_ticket(db: Database, number: str) -> dict[str, Any] | None:
    """One ticket, or None."""
    return core.row(db.execute("SELECT * FROM tickets WHERE number = ?", [number]))


def ticket_for_call(db: Database, call_sid: str) -> dict[str, Any] | None:
    """The ticket a call created, or None."""
    return core.row(db.execute("SELECT * FROM tickets WHERE call_sid = ?", [call_sid]))


def insert_ticket(db: Database, ticket: dict[str, Any]) -> bool:
    """Insert a ticket; False if its number is already taken (the caller draws another)."""
    try:
        core.insert(db, "tickets", ticket)
    except sqlite3.IntegrityError as error:
        if "tickets.number" in str(error):
            return False
        raise
    return True


def list_tickets(db: Database, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Tickets, newest first, optionally with one status."""
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    return core.rows(
        db.execute(
            f"SELECT * FROM tickets {where} ORDER BY created_at DESC LIMIT ?",  # noqa: S608
            [*params, limit],
        )
    )


def set_ticket_status(db: Database, number: str, status: str, at: datetime) -> bool:
    """Change a ticket's status; False if there is no such ticket."""
    cursor = db.execute(
        "UPDATE tickets SET status = ?, updated_at = ? WHERE number = ?",
        [status, timestamp(at), number],
    )
    return cursor.rowcount == 1


def set_ticket_description(
    db: Database, call_sid: str, text: str, confidence: float | None, at: datetime
) -> None:
    """Attach the transcribed problem description to the call's ticket (if it has one yet)."""
    db.execute(
        "UPDATE tickets SET description = ?, description_confidence = ?, updated_at = ? "
        "WHERE call_sid = ?",
        [text, confidence, timestamp(at), call_sid],
    )


def ticket_notes(db: Database, number: str) -> list[dict[str, Any]]:
    """A ticket's notes, oldest first, with the author's name."""
    return core.rows(
        db.execute(
            """
            SELECT n.*, o.full_name AS author_name, o.login AS author_login
            FROM ticket_notes n LEFT JOIN operators o ON o.id = n.operator_id
            WHERE n.ticket_number = ? ORDER BY n.id
            """,
            [number],
        )
    )


def add_ticket_note(
    db: Database, number: str, operator_id: int | None, body: str, at: datetime
) -> int:
    """Add a note to a ticket; returns its id."""
    cursor = db.execute(
        "INSERT INTO ticket_notes (ticket_number, operator_id, body, created_at) "
        "VALUES (?, ?, ?, ?)",
        [number, operator_id, body, timestamp(at)],
    )
    return cursor.lastrowid


def operator_open_tickets(db: Database, operator_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """An operator's unresolved tickets, oldest due first."""
    return core.rows(
        db.execute(
            "SELECT * FROM tickets WHERE operator_id = ? AND status != 'resolved' "
            "ORDER BY due_at, number LIMIT ?",
            [operator_id, limit],
        )
    )


def callbacks_waiting(db: Database, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
    """Open after-hours callback tickets: (how many, the first `limit` by callback time)."""
    where = "WHERE after_hours = 1 AND status = 'open'"
    total = db.execute(f"SELECT count(*) FROM tickets {where}").fetchone()[0]  # noqa: S608
    found = core.rows(
        db.execute(
            f"SELECT * FROM tickets {where} ORDER BY callback_at, number LIMIT ?",  # noqa: S608
            [limit],
        )
    )
    return total, found

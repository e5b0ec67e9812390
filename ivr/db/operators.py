"""The operator roster (sqlite-utils' table API: written rarely, never on the call path)."""

from __future__ import annotations

from typing import Any

from ivr.db import core, sessions
from ivr.db.core import Database


def list_operators(db: Database, active_only: bool = False) -> list[dict[str, Any]]:
    """The roster, with each operator's count of unresolved tickets.

    The statuses are named (not `!= 'resolved'`) so the count reads only the unresolved
    entries of tickets_operator_status, not a year of each operator's tickets.
    """
    where = "WHERE o.active = 1" if active_only else ""
    return core.rows(
        db.execute(
            f"""
            SELECT o.*, (
                SELECT count(*) FROM tickets t
                WHERE t.operator_id = o.id AND t.status IN ('open', 'in_progress')
            ) AS open_tickets
            FROM operators o {where} ORDER BY o.id
            """  # noqa: S608
        )
    )


def insert_operator(db: Database, operator: dict[str, Any]) -> int:
    """Add an operator to the roster; returns the new id."""
    return db["operators"].insert(operator).last_pk


def get_operator(db: Database, key: str | int) -> dict[str, Any] | None:
    """An operator by id or login."""
    if isinstance(key, int) or (str(key).isascii() and str(key).isdigit()):
        return core.row(db.execute("SELECT * FROM operators WHERE id = ?", [int(key)]))
    return core.row(db.execute("SELECT * FROM operators WHERE login = ?", [key]))


def operator_by_login(db: Database, login: str) -> dict[str, Any] | None:
    """An operator by console login only (a login made of digits is not taken for an id)."""
    return core.row(db.execute("SELECT * FROM operators WHERE login = ?", [login]))


def update_operator(db: Database, operator_id: int, changes: dict[str, Any]) -> None:
    """Change some columns of an operator (column names come from code, values are bound)."""
    db["operators"].update(operator_id, changes)


def set_operator_password(db: Database, operator_id: int, password_hash: str | None) -> None:
    """Store an operator's password hash (never the password); ends their console sessions."""
    db.execute("UPDATE operators SET password_hash = ? WHERE id = ?", [password_hash, operator_id])
    sessions.end_operator_sessions(db, operator_id)


def set_operator_active(db: Database, operator_id: int, active: bool) -> None:
    """Activate or deactivate an operator (which ends their console sessions)."""
    db.execute("UPDATE operators SET active = ? WHERE id = ?", [int(active), operator_id])
    if not active:
        sessions.end_operator_sessions(db, operator_id)

"""Counts for the dashboard and /metrics."""

from __future__ import annotations

from typing import Any

from ivr.db import core
from ivr.db.core import Database


def calls_per_hour(db: Database, start: str, end: str) -> list[dict[str, Any]]:
    """Calls started in [start, end) counted per UTC hour ('YYYY-MM-DDTHH') and line."""
    return core.rows(
        db.execute(
            "SELECT substr(started_at, 1, 13) AS hour, line, count(*) AS calls FROM calls "
            "WHERE started_at >= ? AND started_at < ? GROUP BY hour, line ORDER BY hour",
            [start, end],
        )
    )


def outcome_counts(db: Database, start: str, end: str) -> dict[str | None, int]:
    """Calls started in [start, end) counted per outcome (None: still in the menu)."""
    found = db.execute(
        "SELECT outcome, count(*) FROM calls WHERE started_at >= ? AND started_at < ? "
        "GROUP BY outcome",
        [start, end],
    ).fetchall()
    return {outcome: total for outcome, total in found}


def recognition_stats(db: Database, since: str) -> list[dict[str, Any]]:
    """Finished recognitions since `since` per language and purpose: total, ok, mean confidence."""
    return core.rows(
        db.execute(
            """
            SELECT language, purpose, count(*) AS total, sum(ok = 1) AS ok,
                   avg(confidence) AS confidence
            FROM recognitions WHERE created_at >= ? AND ok IS NOT NULL
            GROUP BY language, purpose ORDER BY language, purpose
            """,
            [since],
        )
    )


def all_outcomes(db: Database) -> dict[str, int]:
    """Every call on record by outcome ('in_progress' for calls without one), for /metrics."""
    found = db.execute("SELECT outcome, count(*) FROM calls GROUP BY outcome").fetchall()
    return {outcome or "in_progress": total for outcome, total in found}


def all_recognitions(db: Database) -> dict[str, int]:
    """Every recognition on record: recognised / not_recognised / pending, for /metrics."""
    totals: dict[str, int] = {}
    for ok, status, total in db.execute(
        "SELECT ok, status, count(*) FROM recognitions GROUP BY ok, status"
    ):
        name = ("recognised" if ok else "not_recognised") if status == "done" else "pending"
        totals[name] = totals.get(name, 0) + total
    return totals

"""Recordings of callers and the recognitions of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ivr.db import core
from ivr.db.core import Database, timestamp


def update_recording(db: Database, sid: str, changes: dict[str, Any]) -> None:
    """Change some columns of a known recording."""
    core.update(db, "recordings", ("sid", sid), changes)


def insert_recording_once(db: Database, recording: dict[str, Any]) -> None:
    """Add a recording unless it is already known."""
    core.insert(db, "recordings", recording, or_ignore=True)


def get_recording(db: Database, sid: str) -> dict[str, Any] | None:
    """One recording, or None."""
    return core.row(db.execute("SELECT * FROM recordings WHERE sid = ?", [sid]))


def claim_recording(db: Database, sid: str, at: datetime) -> bool:
    """Mark a recording as being fetched; False if someone already did (one fetch each)."""
    cursor = db.execute(
        "UPDATE recordings SET status = 'fetching', updated_at = ? "
        "WHERE sid = ? AND status = 'pending'",
        [timestamp(at), sid],
    )
    return cursor.rowcount == 1


def call_recordings(db: Database, call_sid: str) -> list[dict[str, Any]]:
    """The recordings of a call, in order."""
    return core.rows(
        db.execute(
            "SELECT * FROM recordings WHERE call_sid = ? ORDER BY created_at, rowid", [call_sid]
        )
    )


def recordings_created_before(db: Database, before: datetime) -> list[dict[str, Any]]:
    """Recordings made before an instant and not purged yet, oldest first."""
    return core.rows(
        db.execute(
            "SELECT * FROM recordings WHERE created_at < ? AND status != 'purged' "
            "ORDER BY created_at, sid",
            [timestamp(before)],
        )
    )


def mark_recording_purged(db: Database, sid: str, at: datetime) -> None:
    """Note that a recording's local copy is gone for good."""
    db.execute(
        "UPDATE recordings SET status = 'purged', local_path = NULL, updated_at = ? WHERE sid = ?",
        [timestamp(at), sid],
    )


def add_pending_recognition(db: Database, recognition: dict[str, Any]) -> None:
    """A recognition waiting for its recording (at most one per recording)."""
    core.insert(db, "recognitions", recognition, or_ignore=True)


def get_recognition(db: Database, recording_sid: str) -> dict[str, Any] | None:
    """The recognition of a recording, or None."""
    return core.row(
        db.execute("SELECT * FROM recognitions WHERE recording_sid = ?", [recording_sid])
    )


def complete_recognition(db: Database, recording_sid: str, result: dict[str, Any]) -> None:
    """Store a finished recognition (text, digits, confidence, words, timings, reason)."""
    core.update(db, "recognitions", ("recording_sid", recording_sid), result)


def call_recognitions(db: Database, call_sid: str) -> list[dict[str, Any]]:
    """A call's recognitions, oldest first."""
    return core.rows(
        db.execute("SELECT * FROM recognitions WHERE call_sid = ? ORDER BY id", [call_sid])
    )

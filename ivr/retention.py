"""Deleting personal data on request or by period: `ivr calls purge` (152-FZ).

Calls, their events, recognitions, recordings (rows and files), tickets and notes go in one
transaction; the files are removed after it commits (a failed purge leaves every file in
place). The audit trail records that a purge happened, its period and counts; never the
caller's number or anything else that was deleted.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import date, datetime, time, timedelta
from pathlib import Path

from ivr import db as database
from ivr.db import audit as audit_store
from ivr.db import purge as purge_store
from ivr.hours import MOSCOW
from ivr.speech.recordings import stored_files
from ivr.vocabulary import AuditAction

log = logging.getLogger("ivr.retention")

CALLER_PATTERN = re.compile(r"^\+[0-9]{7,15}\Z")  # ASCII digits only
# A call not ended yet that started this recently may still be going on: it is left alone.
LIVE_CALL_GRACE = timedelta(hours=2)


def parse_purge_date(text: str, today: date) -> datetime:
    """'YYYY-MM-DD' -> midnight Moscow time of that day; ValueError for anything else."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--before wants a date like 2026-01-31, got {text!r}") from None
    if day > today + timedelta(days=1):
        raise ValueError(f"--before {day} is in the future")
    return datetime.combine(day, time(0), tzinfo=MOSCOW)


def parse_caller(text: str) -> str:
    """A caller's number as stored (+ and digits); ValueError unless it is one."""
    number = re.sub(r"[\s()\-.]", "", text)
    if not CALLER_PATTERN.match(number):
        raise ValueError(f"--caller wants a number like +79161234567, got {text!r}")
    return number


def purge_calls(
    db: database.Database,
    recordings_dir: str | Path,
    now: datetime,
    before: datetime | None = None,
    caller: str | None = None,
) -> dict[str, int]:
    """Delete the calls started before `before` and/or from `caller`; returns counts per kind."""
    if before is None and caller is None:
        raise ValueError("give --before DATE, --caller NUMBER or both")
    with database.write_transaction(db):
        purge_store.select_calls(db, before, caller, live_since=now - LIVE_CALL_GRACE)
        root = Path(recordings_dir)
        files = [
            path for row in purge_store.marked_recordings(db) for path in stored_files(root, row)
        ]
        counts = purge_store.delete_marked(db)
        detail = {
            "before": before.date().isoformat() if before else None,
            "by_caller": caller is not None,
            **counts,
        }
        audit_store.add_audit(db, now, None, AuditAction.CALLS_PURGE, None, detail)
    counts["files"] = 0
    for path in files:
        try:
            path.unlink()
            counts["files"] += 1
        except FileNotFoundError:
            continue
        except OSError as error:
            log.warning("recording file not deleted: %s", error, extra={"path": str(path)})
            continue
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds once the call's folder is empty
    log.info(
        "purged calls",
        extra={"before": detail["before"], "by_caller": detail["by_caller"], **counts},
    )
    return counts

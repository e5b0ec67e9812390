"""The one place that talks to SQLite: connection, schema, migrations, and the queries."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

# Each entry moves the schema one version up; `migrate` applies the missing ones in order.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE operators (
        id INTEGER PRIMARY KEY,
        full_name TEXT NOT NULL,
        name_en TEXT,
        login TEXT UNIQUE,
        role TEXT NOT NULL DEFAULT 'operator' CHECK (role IN ('operator', 'admin')),
        password_hash TEXT,
        languages TEXT NOT NULL DEFAULT 'ru',
        endpoint TEXT NOT NULL,
        shift_start TEXT NOT NULL DEFAULT '08:00',
        shift_end TEXT NOT NULL DEFAULT '20:00',
        active INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    CREATE TABLE calls (
        call_sid TEXT PRIMARY KEY,
        account_sid TEXT,
        line TEXT NOT NULL,
        to_number TEXT,
        from_number TEXT,
        language TEXT NOT NULL DEFAULT 'ru',
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        ended_at TEXT,
        status TEXT,
        duration INTEGER,
        step TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT '{}',
        outcome TEXT,
        order_number TEXT,
        category TEXT,
        ticket_number TEXT,
        operator_id INTEGER REFERENCES operators(id),
        operator_name TEXT,
        after_hours INTEGER NOT NULL DEFAULT 0,
        simulated_now TEXT
    );
    CREATE INDEX calls_started_at ON calls(started_at);
    CREATE INDEX calls_order_number ON calls(order_number);
    CREATE INDEX calls_operator ON calls(operator_id, outcome);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        call_sid TEXT NOT NULL REFERENCES calls(call_sid),
        seq INTEGER NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        step TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_call ON events(call_sid, id);
    CREATE TABLE tickets (
        number TEXT PRIMARY KEY,
        call_sid TEXT UNIQUE REFERENCES calls(call_sid),
        caller_number TEXT,
        order_number TEXT,
        category TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open'
            CHECK (status IN ('open', 'in_progress', 'resolved')),
        operator_id INTEGER REFERENCES operators(id),
        operator_name TEXT,
        language TEXT NOT NULL DEFAULT 'ru',
        after_hours INTEGER NOT NULL DEFAULT 0,
        callback_at TEXT,
        related_ticket TEXT,
        created_at TEXT NOT NULL,
        due_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX tickets_operator_status ON tickets(operator_id, status);
    CREATE INDEX tickets_order_number ON tickets(order_number);
    CREATE TABLE webhook_responses (
        key TEXT PRIMARY KEY,
        call_sid TEXT NOT NULL,
        twiml TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    # 2: speech (recordings, recognitions, ticket descriptions) and the operator console.
    """
    CREATE TABLE recordings (
        sid TEXT PRIMARY KEY,
        call_sid TEXT NOT NULL REFERENCES calls(call_sid),
        purpose TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        url TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        duration REAL,
        local_path TEXT,
        bytes INTEGER,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX recordings_call ON recordings(call_sid);
    CREATE INDEX recordings_created ON recordings(created_at);
    CREATE TABLE recognitions (
        id INTEGER PRIMARY KEY,
        call_sid TEXT NOT NULL REFERENCES calls(call_sid),
        recording_sid TEXT REFERENCES recordings(sid),
        purpose TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        language TEXT NOT NULL,
        mode TEXT,
        model TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        ok INTEGER,
        reason TEXT,
        text TEXT,
        digits TEXT,
        confidence REAL,
        words TEXT,
        audio_seconds REAL,
        processing_seconds REAL,
        created_at TEXT NOT NULL,
        completed_at TEXT
    );
    CREATE INDEX recognitions_call ON recognitions(call_sid, id);
    CREATE UNIQUE INDEX recognitions_recording ON recognitions(recording_sid);
    ALTER TABLE tickets ADD COLUMN description TEXT;
    ALTER TABLE tickets ADD COLUMN description_confidence REAL;
    CREATE TABLE ticket_notes (
        id INTEGER PRIMARY KEY,
        ticket_number TEXT NOT NULL REFERENCES tickets(number),
        operator_id INTEGER REFERENCES operators(id),
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX ticket_notes_ticket ON ticket_notes(ticket_number, id);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        operator_id INTEGER REFERENCES operators(id),
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_log_at ON audit_log(at);
    CREATE TABLE login_attempts (
        id INTEGER PRIMARY KEY,
        login TEXT NOT NULL,
        remote_addr TEXT,
        at TEXT NOT NULL,
        ok INTEGER NOT NULL
    );
    CREATE INDEX login_attempts_login ON login_attempts(login, at);
    CREATE INDEX calls_ticket ON calls(ticket_number);
    CREATE INDEX calls_outcome ON calls(outcome, started_at);
    """,
)


def timestamp(instant: datetime) -> str:
    """Instants are stored as UTC ISO-8601 text with milliseconds, so text order is time order."""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds")


def connect(path: str | Path, busy_timeout_ms: int = 5000) -> Database:
    """Open the database in WAL mode with a busy timeout well under Twilio's 15 s."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return Database(conn, execute_plugins=False)


def schema_version(db: Database) -> int:
    """The schema version this database is at."""
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: Database) -> int:
    """Bring the schema up to date; safe to run any number of times. Returns the version."""
    with write_transaction(db):
        version = schema_version(db)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
    return schema_version(db)


@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front so webhooks serialise cleanly."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    else:
        db.conn.execute("COMMIT")


def _row(cursor: sqlite3.Cursor) -> dict[str, Any] | None:
    row = cursor.fetchone()
    return dict(row) if row is not None else None


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [dict(row) for row in cursor.fetchall()]


# Calls and their timeline ----------------------------------------------------------------


def get_call(db: Database, call_sid: str) -> dict[str, Any] | None:
    """One call row, or None."""
    return _row(db.execute("SELECT * FROM calls WHERE call_sid = ?", [call_sid]))


def insert_call(db: Database, call: dict[str, Any]) -> None:
    """Record a new call."""
    db["calls"].insert(call)


def update_call(db: Database, call_sid: str, changes: dict[str, Any]) -> None:
    """Change some columns of a call."""
    db["calls"].update(call_sid, changes)


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
    db.execute(
        "INSERT INTO events (call_sid, seq, at, kind, step, detail) VALUES (?, ?, ?, ?, ?, ?)",
        [call_sid, seq, timestamp(at), kind, step, json.dumps(detail or {}, ensure_ascii=False)],
    )


def call_events(db: Database, call_sid: str) -> list[dict[str, Any]]:
    """A call's timeline, oldest first."""
    rows = _rows(db.execute("SELECT * FROM events WHERE call_sid = ? ORDER BY id", [call_sid]))
    for row in rows:
        row["detail"] = json.loads(row["detail"])
    return rows


def list_calls(db: Database, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """The call log, newest first."""
    return _rows(
        db.execute(
            "SELECT * FROM calls ORDER BY started_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [limit, offset],
        )
    )


def stored_response(db: Database, key: str) -> str | None:
    """The TwiML already sent for this webhook delivery, if it was handled before."""
    row = _row(db.execute("SELECT twiml FROM webhook_responses WHERE key = ?", [key]))
    return row["twiml"] if row else None


def store_response(db: Database, key: str, call_sid: str, twiml: str, at: datetime) -> None:
    """Remember the answer to a webhook delivery so a retry gets the same TwiML."""
    db.execute(
        "INSERT INTO webhook_responses (key, call_sid, twiml, created_at) VALUES (?, ?, ?, ?)",
        [key, call_sid, twiml, timestamp(at)],
    )


# Tickets ---------------------------------------------------------------------------------


def get_ticket(db: Database, number: str) -> dict[str, Any] | None:
    """One ticket, or None."""
    return _row(db.execute("SELECT * FROM tickets WHERE number = ?", [number]))


def ticket_for_call(db: Database, call_sid: str) -> dict[str, Any] | None:
    """The ticket a call created, or None."""
    return _row(db.execute("SELECT * FROM tickets WHERE call_sid = ?", [call_sid]))


def insert_ticket(db: Database, ticket: dict[str, Any]) -> bool:
    """Insert a ticket; False if its number is already taken (the caller draws another)."""
    try:
        db["tickets"].insert(ticket)
    except sqlite3.IntegrityError as error:
        if "tickets.number" in str(error):
            return False
        raise
    return True


def list_tickets(db: Database, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Tickets, newest first, optionally with one status."""
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    return _rows(
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


# Operators -------------------------------------------------------------------------------


def list_operators(db: Database, active_only: bool = False) -> list[dict[str, Any]]:
    """The roster, with each operator's count of unresolved tickets."""
    where = "WHERE o.active = 1" if active_only else ""
    return _rows(
        db.execute(
            f"""
            SELECT o.*, (
                SELECT count(*) FROM tickets t
                WHERE t.operator_id = o.id AND t.status != 'resolved'
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
    if isinstance(key, int) or str(key).isdigit():
        return _row(db.execute("SELECT * FROM operators WHERE id = ?", [int(key)]))
    return _row(db.execute("SELECT * FROM operators WHERE login = ?", [key]))


def set_operator_active(db: Database, operator_id: int, active: bool) -> None:
    """Activate or deactivate an operator."""
    db.execute("UPDATE operators SET active = ? WHERE id = ?", [int(active), operator_id])


def operator_on_call(db: Database, operator_id: int, except_call: str) -> bool:
    """Whether the operator is being dialled or talking on another live call."""
    row = db.execute(
        """
        SELECT 1 FROM calls
        WHERE operator_id = ? AND outcome = 'connecting' AND ended_at IS NULL
          AND call_sid != ?
        LIMIT 1
        """,
        [operator_id, except_call],
    ).fetchone()
    return row is not None

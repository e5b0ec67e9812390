"""The one place that talks to SQLite: connection, schema, migrations, and the queries."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    # 3: the console's searches stay fast on a big log (see tests/bench/bench_console.py):
    # the caller's last four digits, the calls still live, tickets newest first, callbacks
    # waiting, and sign-in throttling per address.
    """
    CREATE INDEX calls_caller_last4 ON calls(substr(from_number, -4));
    CREATE INDEX calls_live ON calls(started_at) WHERE ended_at IS NULL;
    CREATE INDEX tickets_created ON tickets(created_at);
    CREATE INDEX tickets_caller_last4 ON tickets(substr(caller_number, -4));
    CREATE INDEX tickets_waiting ON tickets(callback_at) WHERE after_hours = 1 AND status = 'open';
    CREATE INDEX login_attempts_address ON login_attempts(remote_addr, at);
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
    db = Database(conn, execute_plugins=False)
    db.ivr_write_lock = None if str(path) == ":memory:" else _write_lock(path)
    db.ivr_busy_timeout = busy_timeout_ms / 1000
    return db


# Writers in this process take turns on one lock per database file before BEGIN IMMEDIATE:
# a waiting thread is woken the moment the writer before it commits. Left to SQLite's busy
# handler, it would sleep and retry with back-off (up to 100 ms a try), which under load put
# hundreds of milliseconds on webhooks with a few milliseconds of work (see
# tests/bench/bench_load.py). Other processes (the CLI) still meet the busy timeout.
_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: str | Path) -> threading.RLock:
    key = str(Path(path).resolve())
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.RLock())


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
    lock = getattr(db, "ivr_write_lock", None)
    if lock is not None and not lock.acquire(timeout=db.ivr_busy_timeout):
        raise sqlite3.OperationalError("database is locked (by another writer in this process)")
    try:
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            raise
        else:
            db.conn.execute("COMMIT")
    finally:
        if lock is not None:
            lock.release()


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


# Speech: recordings and recognitions ---------------------------------------------------


def update_recording(db: Database, sid: str, changes: dict[str, Any]) -> None:
    """Change some columns of a known recording."""
    db["recordings"].update(sid, changes)


def insert_recording_once(db: Database, recording: dict[str, Any]) -> None:
    """Add a recording unless it is already known."""
    db["recordings"].insert(recording, ignore=True)


def get_recording(db: Database, sid: str) -> dict[str, Any] | None:
    """One recording, or None."""
    return _row(db.execute("SELECT * FROM recordings WHERE sid = ?", [sid]))


def claim_recording(db: Database, sid: str, at: datetime) -> bool:
    """Mark a recording as being fetched; False if someone already did (one fetch each)."""
    cursor = db.execute(
        "UPDATE recordings SET status = 'fetching', updated_at = ? "
        "WHERE sid = ? AND status = 'pending'",
        [timestamp(at), sid],
    )
    return cursor.rowcount == 1


def add_pending_recognition(db: Database, recognition: dict[str, Any]) -> None:
    """A recognition waiting for its recording (at most one per recording)."""
    db["recognitions"].insert(recognition, ignore=True)


def get_recognition(db: Database, recording_sid: str) -> dict[str, Any] | None:
    """The recognition of a recording, or None."""
    return _row(db.execute("SELECT * FROM recognitions WHERE recording_sid = ?", [recording_sid]))


def complete_recognition(db: Database, recording_sid: str, result: dict[str, Any]) -> None:
    """Store a finished recognition (text, digits, confidence, words, timings, reason)."""
    columns = ", ".join(f"{name} = ?" for name in result)
    db.execute(
        f"UPDATE recognitions SET {columns} WHERE recording_sid = ?",  # noqa: S608 - names are ours
        [*result.values(), recording_sid],
    )


def call_recognitions(db: Database, call_sid: str) -> list[dict[str, Any]]:
    """A call's recognitions, oldest first."""
    return _rows(
        db.execute("SELECT * FROM recognitions WHERE call_sid = ? ORDER BY id", [call_sid])
    )


def set_ticket_description(
    db: Database, call_sid: str, text: str, confidence: float | None, at: datetime
) -> None:
    """Attach the transcribed problem description to the call's ticket (if it has one yet)."""
    db.execute(
        "UPDATE tickets SET description = ?, description_confidence = ?, updated_at = ? "
        "WHERE call_sid = ?",
        [text, confidence, timestamp(at), call_sid],
    )


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


# Recordings ------------------------------------------------------------------------------


def recordings_created_before(db: Database, before: datetime) -> list[dict[str, Any]]:
    """Recordings made before an instant and not purged yet, oldest first."""
    return _rows(
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


# Console ---------------------------------------------------------------------------------
# The operator console's queries. Every value arrives as a bound parameter; the only text
# put into SQL is fixed fragments chosen here (never anything a user typed).

CALL_LOG_COLUMNS = (
    "c.call_sid, c.line, c.language, c.from_number, c.to_number, c.started_at, c.ended_at, "
    "c.status, c.duration, c.step, c.outcome, c.order_number, c.category, c.ticket_number, "
    "c.operator_id, c.operator_name, c.after_hours"
)


@dataclass(frozen=True)
class CallFilters:
    """What the call log is narrowed to; None means "any"."""

    started_from: str | None = None  # stored-timestamp text, inclusive
    started_before: str | None = None  # stored-timestamp text, exclusive
    line: str | None = None
    outcome: str | None = None
    operator_id: int | None = None
    category: str | None = None
    digits: str | None = None  # order number / ticket number (prefix) or caller's last digits
    text: str | None = None  # words in the ticket's description (the caller's transcript)


@dataclass(frozen=True)
class TicketFilters:
    """What the ticket list is narrowed to; None means "any"."""

    status: str | None = None
    category: str | None = None
    operator_id: int | None = None
    after_hours: bool | None = None
    digits: str | None = None  # ticket number / order number (prefix) or caller's last digits
    text: str | None = None  # words in the description or the notes


def _like_escape(text: str) -> str:
    """Make LIKE's wildcards in user text literal (used with ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _digit_prefix_range(digits: str) -> tuple[str, str]:
    """[digits, digits + ':') holds every digit string starting with `digits` (':' follows '9')."""
    return digits, digits + ":"


def _caller_suffix_match(table: str, column: str, digits: str) -> tuple[str, list[Any]]:
    """Rowids of `table` whose `column` ends with the digits; 4+ digits use the suffix index."""
    pattern = "%" + _like_escape(digits)
    if len(digits) >= 4:
        return (
            f"SELECT rowid FROM {table} WHERE substr({column}, -4) = ? "  # noqa: S608
            f"AND {column} LIKE ? ESCAPE '\\'",
            [digits[-4:], pattern],
        )
    return f"SELECT rowid FROM {table} WHERE {column} LIKE ? ESCAPE '\\'", [pattern]  # noqa: S608


def _call_conditions(filters: CallFilters) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("c.line", filters.line),
        ("c.outcome", filters.outcome),
        ("c.operator_id", filters.operator_id),
        ("c.category", filters.category),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if filters.started_from:
        clauses.append("c.started_at >= ?")
        params.append(filters.started_from)
    if filters.started_before:
        clauses.append("c.started_at < ?")
        params.append(filters.started_before)
    if filters.digits:
        low, high = _digit_prefix_range(filters.digits)
        suffix_sql, suffix_params = _caller_suffix_match("calls", "from_number", filters.digits)
        clauses.append(
            "c.rowid IN ("  # noqa: S608 - fixed fragments; the values are bound
            "SELECT rowid FROM calls WHERE order_number >= ? AND order_number < ? "
            "UNION SELECT rowid FROM calls WHERE ticket_number >= ? AND ticket_number < ? "
            f"UNION {suffix_sql})"
        )
        params += [low, high, low, high, *suffix_params]
    if filters.text:
        clauses.append(
            "c.call_sid IN (SELECT call_sid FROM tickets WHERE description LIKE ? ESCAPE '\\')"
        )
        params.append("%" + _like_escape(filters.text) + "%")
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def search_calls(
    db: Database, filters: CallFilters, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """One page of the call log, newest first."""
    where, params = _call_conditions(filters)
    return _rows(
        db.execute(
            f"SELECT {CALL_LOG_COLUMNS} FROM calls c {where} "  # noqa: S608
            "ORDER BY c.started_at DESC, c.rowid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
    )


def count_calls(db: Database, filters: CallFilters) -> int:
    """How many calls match the filters."""
    where, params = _call_conditions(filters)
    return db.execute(f"SELECT count(*) FROM calls c {where}", params).fetchone()[0]  # noqa: S608


def iter_calls(db: Database, filters: CallFilters, limit: int) -> Iterator[dict[str, Any]]:
    """Every matching call, newest first, one at a time (for the CSV export)."""
    where, params = _call_conditions(filters)
    cursor = db.conn.execute(
        f"SELECT {CALL_LOG_COLUMNS} FROM calls c {where} "  # noqa: S608
        "ORDER BY c.started_at DESC, c.rowid DESC LIMIT ?",
        [*params, limit],
    )
    for row in cursor:
        yield dict(row)


def live_calls(db: Database, active_since: str, limit: int = 200) -> list[dict[str, Any]]:
    """Calls not yet ended that heard from Twilio since `active_since`, newest first."""
    return _rows(
        db.execute(
            f"SELECT {CALL_LOG_COLUMNS}, c.updated_at FROM calls c "  # noqa: S608
            "WHERE c.ended_at IS NULL AND c.updated_at >= ? "
            "ORDER BY c.started_at DESC LIMIT ?",
            [active_since, limit],
        )
    )


def call_recordings(db: Database, call_sid: str) -> list[dict[str, Any]]:
    """The recordings of a call, in order."""
    return _rows(
        db.execute(
            "SELECT * FROM recordings WHERE call_sid = ? ORDER BY created_at, rowid", [call_sid]
        )
    )


def _ticket_conditions(filters: TicketFilters) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("t.status", filters.status),
        ("t.category", filters.category),
        ("t.operator_id", filters.operator_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if filters.after_hours is not None:
        clauses.append("t.after_hours = ?")
        params.append(int(filters.after_hours))
    if filters.digits:
        low, high = _digit_prefix_range(filters.digits)
        suffix_sql, suffix_params = _caller_suffix_match("tickets", "caller_number", filters.digits)
        clauses.append(
            "t.rowid IN ("  # noqa: S608 - fixed fragments; the values are bound
            "SELECT rowid FROM tickets WHERE number >= ? AND number < ? "
            "UNION SELECT rowid FROM tickets WHERE order_number >= ? AND order_number < ? "
            f"UNION {suffix_sql})"
        )
        params += [low, high, low, high, *suffix_params]
    if filters.text:
        pattern = "%" + _like_escape(filters.text) + "%"
        clauses.append(
            "(t.description LIKE ? ESCAPE '\\' OR t.number IN "
            "(SELECT ticket_number FROM ticket_notes WHERE body LIKE ? ESCAPE '\\'))"
        )
        params += [pattern, pattern]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def search_tickets(
    db: Database, filters: TicketFilters, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    """One page of tickets, newest first."""
    where, params = _ticket_conditions(filters)
    return _rows(
        db.execute(
            f"SELECT t.* FROM tickets t {where} "  # noqa: S608
            "ORDER BY t.created_at DESC, t.rowid DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
    )


def count_tickets(db: Database, filters: TicketFilters) -> int:
    """How many tickets match the filters."""
    where, params = _ticket_conditions(filters)
    return db.execute(f"SELECT count(*) FROM tickets t {where}", params).fetchone()[0]  # noqa: S608


def ticket_notes(db: Database, number: str) -> list[dict[str, Any]]:
    """A ticket's notes, oldest first, with the author's name."""
    return _rows(
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
    return _rows(
        db.execute(
            "SELECT * FROM tickets WHERE operator_id = ? AND status != 'resolved' "
            "ORDER BY due_at, number LIMIT ?",
            [operator_id, limit],
        )
    )


def operator_by_login(db: Database, login: str) -> dict[str, Any] | None:
    """An operator by console login only (a login made of digits is not taken for an id)."""
    return _row(db.execute("SELECT * FROM operators WHERE login = ?", [login]))


def update_operator(db: Database, operator_id: int, changes: dict[str, Any]) -> None:
    """Change some columns of an operator (column names come from code, values are bound)."""
    db["operators"].update(operator_id, changes)


def set_operator_password(db: Database, operator_id: int, password_hash: str | None) -> None:
    """Store an operator's password hash (never the password)."""
    db.execute("UPDATE operators SET password_hash = ? WHERE id = ?", [password_hash, operator_id])


def record_login_attempt(
    db: Database, login: str, remote_addr: str | None, at: datetime, ok: bool
) -> None:
    """Remember one sign-in attempt (for throttling and the audit trail)."""
    db.execute(
        "INSERT INTO login_attempts (login, remote_addr, at, ok) VALUES (?, ?, ?, ?)",
        [login, remote_addr, timestamp(at), int(ok)],
    )


def login_failures(db: Database, login: str, since: datetime) -> tuple[int, str | None]:
    """Failed sign-ins for a login since `since` and its last success: (count, latest)."""
    row = db.execute(
        """
        SELECT count(*), max(at) FROM login_attempts
        WHERE login = ? AND ok = 0 AND at >= ? AND at > coalesce(
            (SELECT max(at) FROM login_attempts WHERE login = ? AND ok = 1), '')
        """,
        [login, timestamp(since), login],
    ).fetchone()
    return row[0], row[1]


def address_failures(db: Database, remote_addr: str, since: datetime) -> tuple[int, str | None]:
    """Failed sign-ins from one address since `since`: (count, latest)."""
    row = db.execute(
        "SELECT count(*), max(at) FROM login_attempts WHERE remote_addr = ? AND ok = 0 AND at >= ?",
        [remote_addr, timestamp(since)],
    ).fetchone()
    return row[0], row[1]


def add_audit(
    db: Database,
    at: datetime,
    operator_id: int | None,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one row to the audit trail."""
    db.execute(
        "INSERT INTO audit_log (at, operator_id, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        [
            timestamp(at),
            operator_id,
            action,
            target,
            json.dumps(detail or {}, ensure_ascii=False),
        ],
    )


def list_audit(db: Database, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """The audit trail, newest first, with who did it."""
    rows = _rows(
        db.execute(
            """
            SELECT a.*, o.full_name AS operator_full_name, o.login AS operator_login
            FROM audit_log a LEFT JOIN operators o ON o.id = a.operator_id
            ORDER BY a.id DESC LIMIT ? OFFSET ?
            """,
            [limit, offset],
        )
    )
    for row in rows:
        row["detail"] = json.loads(row["detail"])
    return rows


def count_audit(db: Database) -> int:
    """How many rows the audit trail holds."""
    return db.execute("SELECT count(*) FROM audit_log").fetchone()[0]


def calls_per_hour(db: Database, start: str, end: str) -> list[dict[str, Any]]:
    """Calls started in [start, end) counted per UTC hour ('YYYY-MM-DDTHH') and line."""
    return _rows(
        db.execute(
            "SELECT substr(started_at, 1, 13) AS hour, line, count(*) AS calls FROM calls "
            "WHERE started_at >= ? AND started_at < ? GROUP BY hour, line ORDER BY hour",
            [start, end],
        )
    )


def outcome_counts(db: Database, start: str, end: str) -> dict[str | None, int]:
    """Calls started in [start, end) counted per outcome (None: still in the menu)."""
    rows = db.execute(
        "SELECT outcome, count(*) FROM calls WHERE started_at >= ? AND started_at < ? "
        "GROUP BY outcome",
        [start, end],
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def callbacks_waiting(db: Database, limit: int = 10) -> tuple[int, list[dict[str, Any]]]:
    """Open after-hours callback tickets: (how many, the first `limit` by callback time)."""
    where = "WHERE after_hours = 1 AND status = 'open'"
    total = db.execute(f"SELECT count(*) FROM tickets {where}").fetchone()[0]  # noqa: S608
    rows = _rows(
        db.execute(
            f"SELECT * FROM tickets {where} ORDER BY callback_at, number LIMIT ?",  # noqa: S608
            [limit],
        )
    )
    return total, rows


def recognition_stats(db: Database, since: str) -> list[dict[str, Any]]:
    """Finished recognitions since `since` per language and purpose: total, ok, mean confidence."""
    return _rows(
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

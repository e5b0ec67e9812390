"""The schema, one named step per version; `migrate` applies the missing steps in order.

Each step is a function running its statements one by one inside the migration's
transaction (no splitting of a script on ';'), so a step is all there or not at all.
`PRAGMA user_version` holds the version reached.
"""

from __future__ import annotations

from collections.abc import Callable

from ivr.db.core import Database, write_transaction


def _run(db: Database, *statements: str) -> None:
    for statement in statements:
        db.execute(statement)


def v1_calls_tickets_operators(db: Database) -> None:
    """The roster, calls with their timeline, tickets, and the webhooks' stored answers."""
    _run(
        db,
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
        )
        """,
        """
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
        )
        """,
        "CREATE INDEX calls_started_at ON calls(started_at)",
        "CREATE INDEX calls_order_number ON calls(order_number)",
        "CREATE INDEX calls_operator ON calls(operator_id, outcome)",
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            call_sid TEXT NOT NULL REFERENCES calls(call_sid),
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            step TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX events_call ON events(call_sid, id)",
        """
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
        )
        """,
        "CREATE INDEX tickets_operator_status ON tickets(operator_id, status)",
        "CREATE INDEX tickets_order_number ON tickets(order_number)",
        """
        CREATE TABLE webhook_responses (
            key TEXT PRIMARY KEY,
            call_sid TEXT NOT NULL,
            twiml TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """,
    )


def v2_speech_and_console(db: Database) -> None:
    """Recordings, recognitions, ticket descriptions; the console's notes, audit, sign-ins."""
    _run(
        db,
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
        )
        """,
        "CREATE INDEX recordings_call ON recordings(call_sid)",
        "CREATE INDEX recordings_created ON recordings(created_at)",
        """
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
        )
        """,
        "CREATE INDEX recognitions_call ON recognitions(call_sid, id)",
        "CREATE UNIQUE INDEX recognitions_recording ON recognitions(recording_sid)",
        "ALTER TABLE tickets ADD COLUMN description TEXT",
        "ALTER TABLE tickets ADD COLUMN description_confidence REAL",
        """
        CREATE TABLE ticket_notes (
            id INTEGER PRIMARY KEY,
            ticket_number TEXT NOT NULL REFERENCES tickets(number),
            operator_id INTEGER REFERENCES operators(id),
            body TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX ticket_notes_ticket ON ticket_notes(ticket_number, id)",
        """
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            operator_id INTEGER REFERENCES operators(id),
            action TEXT NOT NULL,
            target TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX audit_log_at ON audit_log(at)",
        """
        CREATE TABLE login_attempts (
            id INTEGER PRIMARY KEY,
            login TEXT NOT NULL,
            remote_addr TEXT,
            at TEXT NOT NULL,
            ok INTEGER NOT NULL
        )
        """,
        "CREATE INDEX login_attempts_login ON login_attempts(login, at)",
        "CREATE INDEX calls_ticket ON calls(ticket_number)",
        "CREATE INDEX calls_outcome ON calls(outcome, started_at)",
    )


def v3_console_search_indexes(db: Database) -> None:
    """The console's searches stay fast on a big log (tests/bench/bench_console.py).

    The caller's last four digits, the calls still live, tickets newest first, callbacks
    waiting, and sign-in throttling per address.
    """
    _run(
        db,
        "CREATE INDEX calls_caller_last4 ON calls(substr(from_number, -4))",
        "CREATE INDEX calls_live ON calls(started_at) WHERE ended_at IS NULL",
        "CREATE INDEX tickets_created ON tickets(created_at)",
        "CREATE INDEX tickets_caller_last4 ON tickets(substr(caller_number, -4))",
        "CREATE INDEX tickets_waiting ON tickets(callback_at) "
        "WHERE after_hours = 1 AND status = 'open'",
        "CREATE INDEX login_attempts_address ON login_attempts(remote_addr, at)",
    )


def v5_sessions_and_sign_in_unlock(db: Database) -> None:
    """Server-side console sessions (revocable); failed sign-ins an admin cleared.

    Written as v5 beside another branch's v4 (indexes); renumber at merge if needed.
    """
    _run(
        db,
        """
        CREATE TABLE console_sessions (
            id_hash TEXT PRIMARY KEY,
            operator_id INTEGER NOT NULL REFERENCES operators(id),
            created_at TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX console_sessions_operator ON console_sessions(operator_id)",
        "ALTER TABLE login_attempts ADD COLUMN cleared_at TEXT",
    )


# Each entry moves the schema one version up (the version is its position, from 1).
MIGRATIONS: tuple[Callable[[Database], None], ...] = (
    v1_calls_tickets_operators,
    v2_speech_and_console,
    v3_console_search_indexes,
    v5_sessions_and_sign_in_unlock,
)


def schema_version(db: Database) -> int:
    """The schema version this database is at."""
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: Database) -> int:
    """Bring the schema up to date; safe to run any number of times. Returns the version."""
    with write_transaction(db):
        version = schema_version(db)
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            step(db)
            db.execute(f"PRAGMA user_version = {number}")
    return schema_version(db)

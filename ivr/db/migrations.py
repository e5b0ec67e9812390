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


def v4_console_at_two_million_calls(db: Database) -> None:
    """The console stays fast on a year of a busy line (tests/bench/bench_console.py).

    - The call log's time order and outcome order carry the other filter columns (line,
      outcome, category, operator), so any mix of filters is decided on index entries
      without reading call rows; each replaces the narrower index it extends, so a webhook
      still writes as many index entries per new call (a change of outcome, category or
      operator now also moves the call's entries in these two).
    - One operator's calls in time order: a partial index (calls with an operator only).
    - The dashboard's speech tile reads a week of recognitions by their creation time.
    - The ticket list's time order likewise carries status, operator and category.
    - Words in ticket descriptions and notes are found through FTS5 trigram indexes (any
      substring of three characters or more, case-folded, as LIKE '%...%' found them)
      kept by triggers on tickets and notes (none on calls). Both are external-content
      indexes over the tables' rowids, newest last; after a VACUUM (which may renumber the
      rowids of `tickets`), rebuild them: INSERT INTO ticket_words(ticket_words) VALUES
      ('rebuild'), and the same for note_words.
    """
    _run(
        db,
        "DROP INDEX calls_started_at",
        "CREATE INDEX calls_started_filters ON calls(started_at, line, outcome, category, "
        "operator_id)",
        "DROP INDEX calls_outcome",
        "CREATE INDEX calls_outcome_filters ON calls(outcome, started_at, line, category, "
        "operator_id)",
        "CREATE INDEX calls_operator_started ON calls(operator_id, started_at, line, outcome, "
        "category) WHERE operator_id IS NOT NULL",
        "CREATE INDEX recognitions_created ON recognitions(created_at)",
        "DROP INDEX tickets_created",
        "CREATE INDEX tickets_created_filters ON tickets(created_at, status, operator_id, "
        "category, after_hours)",
        *_word_index("ticket_words", "tickets", "rowid", "description"),
        *_word_index("note_words", "ticket_notes", "id", "body"),
    )


def _word_index(name: str, table: str, key: str, column: str) -> tuple[str, ...]:
    """An FTS5 trigram index of one text column, its four triggers, and its first fill.

    The names are written in this module, never taken from input.
    """
    remove = (
        f"INSERT INTO {name} ({name}, rowid, {column}) "  # noqa: S608 - our identifiers
        f"VALUES ('delete', old.{key}, old.{column})"
    )
    add = f"INSERT INTO {name} (rowid, {column}) VALUES (new.{key}, new.{column})"  # noqa: S608
    return (
        f"CREATE VIRTUAL TABLE {name} USING fts5({column}, content = '{table}', "
        f"content_rowid = '{key}', tokenize = 'trigram')",
        f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} "
        f"WHEN new.{column} IS NOT NULL BEGIN {add}; END",
        f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} "
        f"WHEN old.{column} IS NOT NULL BEGIN {remove}; END",
        f"CREATE TRIGGER {name}_update_old AFTER UPDATE OF {column} ON {table} "
        f"WHEN old.{column} IS NOT NULL BEGIN {remove}; END",
        f"CREATE TRIGGER {name}_update_new AFTER UPDATE OF {column} ON {table} "
        f"WHEN new.{column} IS NOT NULL BEGIN {add}; END",
        f"INSERT INTO {name} (rowid, {column}) "  # noqa: S608 - our identifiers
        f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL",
    )


def v5_sessions_and_sign_in_unlock(db: Database) -> None:
    """Server-side console sessions (revocable); failed sign-ins an admin cleared.

    The console's password fingerprint in the cookie gives way to a sessions table whose
    rows sign-out, a password change and deactivation delete.
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


def v6_lighter_call_inserts(db: Database) -> None:
    """A new call writes only the index entries it needs (the first webhook's cost).

    A call starts with no order number, ticket or operator; full indexes on those columns
    took an entry for every call all the same. As partial indexes (`IS NOT NULL`) they
    serve the same lookups (`col = ?`, `col LIKE ?` imply it) and a new call skips them:
    three fewer pages dirtied in the first webhook's transaction.
    """
    _run(
        db,
        "DROP INDEX calls_order_number",
        "CREATE INDEX calls_order_number ON calls(order_number) WHERE order_number IS NOT NULL",
        "DROP INDEX calls_ticket",
        "CREATE INDEX calls_ticket ON calls(ticket_number) WHERE ticket_number IS NOT NULL",
        "DROP INDEX calls_operator",
        "CREATE INDEX calls_operator ON calls(operator_id, outcome) WHERE operator_id IS NOT NULL",
    )


def v7_operator_presence_legs_queue_callbacks_sms(db: Database) -> None:
    """The ACD: operators' presence, their legs, queued callers, callbacks and SMS (issue 11).

    At most one live leg per operator and per queued caller (unique partial indexes), so two
    dispatchers (threads or nodes) never ring one operator for two callers. Times in these
    tables are real elapsed time (the wall clock), never IVR_NOW's business clock.
    """
    _run(
        db,
        "ALTER TABLE operators ADD COLUMN presence TEXT NOT NULL DEFAULT 'available' "
        "CHECK (presence IN ('available', 'away'))",
        "ALTER TABLE operators ADD COLUMN presence_changed_at TEXT",
        """
        CREATE TABLE operator_legs (
            sid TEXT PRIMARY KEY,
            call_sid TEXT UNIQUE,
            operator_id INTEGER NOT NULL REFERENCES operators(id),
            purpose TEXT NOT NULL CHECK (purpose IN ('queue', 'callback')),
            caller_call_sid TEXT,
            ticket_number TEXT,
            state TEXT NOT NULL CHECK (state IN ('ringing', 'answered', 'ended')),
            result TEXT,
            reserved_until TEXT NOT NULL,
            next_attempt_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            created_at TEXT NOT NULL,
            answered_at TEXT,
            ended_at TEXT,
            updated_at TEXT NOT NULL
        )
        """,
        "CREATE UNIQUE INDEX operator_legs_one_per_operator ON operator_legs(operator_id) "
        "WHERE state != 'ended'",
        "CREATE UNIQUE INDEX operator_legs_one_per_caller ON operator_legs(caller_call_sid) "
        "WHERE state != 'ended' AND caller_call_sid IS NOT NULL",
        "CREATE INDEX operator_legs_caller ON operator_legs(caller_call_sid, created_at)",
        "CREATE INDEX operator_legs_ticket ON operator_legs(ticket_number, created_at)",
        """
        CREATE TABLE queue_entries (
            call_sid TEXT PRIMARY KEY REFERENCES calls(call_sid),
            queue_name TEXT NOT NULL,
            language TEXT NOT NULL,
            ticket_number TEXT,
            operator_id INTEGER REFERENCES operators(id),
            state TEXT NOT NULL
                CHECK (state IN ('waiting', 'bridged', 'left', 'hung_up', 'gone')),
            entered_at TEXT NOT NULL,
            answered_at TEXT,
            left_at TEXT,
            next_attempt_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX queue_entries_waiting ON queue_entries(entered_at) WHERE state = 'waiting'",
        "CREATE INDEX queue_entries_answered ON queue_entries(answered_at)",
        "ALTER TABLE tickets ADD COLUMN callback_requested_at TEXT",
        "ALTER TABLE tickets ADD COLUMN callback_attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tickets ADD COLUMN callback_failures INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tickets ADD COLUMN callback_result TEXT",
        "CREATE INDEX tickets_callback_requested ON tickets(callback_requested_at) "
        "WHERE callback_requested_at IS NOT NULL",
        """
        CREATE TABLE sms_messages (
            ticket_number TEXT PRIMARY KEY REFERENCES tickets(number),
            call_sid TEXT NOT NULL,
            to_number TEXT NOT NULL,
            language TEXT NOT NULL,
            body TEXT NOT NULL,
            message_sid TEXT UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            next_attempt_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX sms_messages_pending ON sms_messages(next_attempt_at) "
        "WHERE status = 'pending'",
    )


# Each entry moves the schema one version up (the version is its position, from 1).
MIGRATIONS: tuple[Callable[[Database], None], ...] = (
    v1_calls_tickets_operators,
    v2_speech_and_console,
    v3_console_search_indexes,
    v4_console_at_two_million_calls,
    v5_sessions_and_sign_in_unlock,
    v6_lighter_call_inserts,
    v7_operator_presence_legs_queue_callbacks_sms,
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

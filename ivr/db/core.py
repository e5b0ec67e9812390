"""The connection, the write lock, transactions and row helpers: what every query module uses.

sqlite-utils wraps the connection (`Database`): its table objects serve where the schema is
inspected (tests, `ivr` admin commands) and where rows are written off the call path
(recordings, the roster). The webhooks' own writes (calls, events, tickets, stored answers)
are plain SQL through `insert` / `update` below: sqlite-utils' `Table.insert` and `update`
read the schema (sqlite_master, PRAGMA table_info) on every call, which was a third of a new
call's SQL statements (tests/bench/bench_webhook_cost.py). Every value is a bound
parameter; the only text put into SQL is table and column names written in this package.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

__all__ = [
    "AUTOCHECKPOINT_PAGES",
    "AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER",
    "Checkpointer",
    "Database",
    "connect",
    "insert",
    "json_text",
    "row",
    "rows",
    "timestamp",
    "update",
]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*\Z")
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")

log = logging.getLogger("ivr.db")


# json.dumps with any option builds a new encoder per call; the webhooks write JSON columns
# (call state, timeline details) several times each.
_JSON_TEXT = json.JSONEncoder(ensure_ascii=False).encode


def json_text(value: Any) -> str:
    """A JSON column's text: UTF-8 as is (Russian prompts stay readable in the database)."""
    return _JSON_TEXT(value)


@functools.lru_cache(maxsize=256)  # a webhook stamps one instant several times
def timestamp(instant: datetime) -> str:
    """Instants are stored as UTC ISO-8601 text with milliseconds, so text order is time order."""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds")


# SQLite's default: the commit that takes the WAL past this many pages copies it back.
AUTOCHECKPOINT_PAGES = 1000
# With a Checkpointer running, request connections leave that to it and only step in when
# the WAL grows this large (the checkpointer stalled or cannot keep up): a safety net.
AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER = 20 * AUTOCHECKPOINT_PAGES


def connect(
    path: str | Path, busy_timeout_ms: int = 5000, autocheckpoint: int = AUTOCHECKPOINT_PAGES
) -> Database:
    """Open the database in WAL mode with a busy timeout well under Twilio's 15 s.

    `autocheckpoint`: the WAL size (pages) at which this connection's commit checkpoints
    (see Checkpointer for why the server's request connections raise it).
    """
    if str(path) != ":memory:":
        make_private_folder(Path(path).parent)
        make_private_files(Path(path))
    conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if autocheckpoint != AUTOCHECKPOINT_PAGES:
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint)}")
    db = Database(conn, execute_plugins=False)
    db.ivr_write_lock = None if str(path) == ":memory:" else _write_lock(path)
    db.ivr_busy_timeout = busy_timeout_ms / 1000
    return db


def make_private_folder(folder: Path) -> None:
    """Create the folder (and missing parents) readable by this user only (0700).

    A folder that already exists keeps its mode: it may be shared (the working directory);
    the files in it are what must be private.
    """
    if folder.is_dir():
        return
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # mkdir's mode is filtered by the umask


def make_private_files(path: Path) -> None:
    """The database and its -wal / -shm files: 0600 (they hold numbers, transcripts, hashes).

    SQLite gives -wal and -shm the database file's mode, so creating that file 0600 before
    SQLite opens it covers the others; files left with looser modes are fixed and logged.
    """
    # Never open (and close) a file descriptor on an existing database: closing any
    # descriptor of a file drops every POSIX lock this process holds on it, including
    # those of SQLite connections already open here -- other writers could then corrupt it.
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for suffix in DATABASE_SUFFIXES:
        file = Path(f"{path}{suffix}")
        try:
            current = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if current & 0o077:
            file.chmod(0o600)
            log.warning(
                "database file was readable by other users: mode set to 0600",
                extra={"path": str(file), "was": oct(current)},
            )


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


class Checkpointer:
    """Copies the WAL back into the database file on a background thread, off the request path.

    By default SQLite checkpoints in the commit that takes the WAL past 1000 pages: one
    webhook in about a hundred paid for copying the pages of the hundred before it, and
    for two fsyncs, while holding the write lock (a new call's COMMIT: mean 112 us, median
    41 us; with this thread running, mean 67 us; docs/reliability.md "Webhook cost").
    While this runs (`ivr serve` starts it), the request connections raise that threshold
    to a safety net (AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER) and this thread checkpoints
    every `interval` seconds in PASSIVE mode: it never waits for a reader or a writer, and
    SQLite releases the GIL while it copies, so the copying runs beside the requests.
    """

    def __init__(self, path: str | Path, interval: float = 0.2) -> None:
        self.path = str(path)
        self.interval = interval
        self.passes = 0  # checkpoints run (tests wait on it)
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Checkpoint every `interval` seconds until closed (a no-op for :memory:)."""
        if self.path == ":memory:" or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ivr-checkpointer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread after its last checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        db = connect(self.path)
        try:
            while not self._stop.wait(self.interval):
                self.checkpoint(db)
            self.checkpoint(db)
        finally:
            db.conn.close()

    def checkpoint(self, db: Database) -> None:
        """One PASSIVE checkpoint: copy what no reader still needs from the WAL."""
        try:
            db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.passes += 1
        except sqlite3.Error:
            self.failures += 1  # the safety net in the request connections takes over
            log.exception("WAL checkpoint failed", extra={"path": self.path})


def row(cursor: sqlite3.Cursor) -> dict[str, Any] | None:
    """The cursor's first row as a dict, or None."""
    found = cursor.fetchone()
    return dict(found) if found is not None else None


def rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """All of the cursor's rows as dicts."""
    return [dict(found) for found in cursor.fetchall()]


def _names(names: Iterable[str]) -> list[str]:
    checked = list(names)
    for name in checked:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"not a column name: {name!r}")
    return checked


def insert(
    db: Database, table: str, values: Mapping[str, Any], or_ignore: bool = False
) -> sqlite3.Cursor:
    """INSERT one row (plain SQL: no schema lookups); table and column names are ours."""
    _names([table])
    columns = _names(values)
    verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
    return db.execute(
        f"{verb} INTO {table} ({', '.join(columns)}) "  # noqa: S608 - checked identifiers
        f"VALUES ({', '.join('?' * len(columns))})",
        list(values.values()),
    )


def update(
    db: Database, table: str, key: tuple[str, Any], changes: Mapping[str, Any]
) -> sqlite3.Cursor | None:
    """UPDATE the row whose `key` column has the key's value; nothing when there are no changes."""
    if not changes:
        return None
    key_column, key_value = key
    _names([table, key_column])
    columns = _names(changes)
    assignments = ", ".join(f"{column} = ?" for column in columns)
    return db.execute(
        f"UPDATE {table} SET {assignments} WHERE {key_column} = ?",  # noqa: S608
        [*changes.values(), key_value],
    )

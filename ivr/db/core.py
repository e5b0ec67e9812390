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

__all__ = ["Database", "connect", "insert", "row", "rows", "timestamp", "update"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*\Z")
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")

log = logging.getLogger("ivr.db")


@functools.lru_cache(maxsize=256)  # a webhook stamps one instant several times
def timestamp(instant: datetime) -> str:
    """Instants are stored as UTC ISO-8601 text with milliseconds, so text order is time order."""
    return instant.astimezone(UTC).isoformat(timespec="milliseconds")


def connect(path: str | Path, busy_timeout_ms: int = 5000) -> Database:
    """Open the database in WAL mode with a busy timeout well under Twilio's 15 s."""
    if str(path) != ":memory:":
        make_private_folder(Path(path).parent)
        make_private_files(Path(path))
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

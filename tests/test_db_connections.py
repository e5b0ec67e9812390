"""The webhooks' database connections: one shared connection, checkpoints off the request path."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import AUTH_TOKEN

from ivr import db as database
from ivr.emulator import EmulatedCall, FlaskTransport
from ivr.web.context import get_db, webhook_db


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def rows_in_the_main_file(db_path: str, tmp_path) -> int:
    """How many calls the database file holds without its WAL (what a checkpoint copied)."""
    copy = tmp_path / "main-file-only.sqlite3"
    shutil.copyfile(db_path, copy)  # the -wal file is left behind on purpose
    with sqlite3.connect(copy) as conn:
        return conn.execute("SELECT count(*) FROM calls").fetchone()[0]


def autocheckpoint(db: database.Database) -> int:
    return db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def start_calls(app, count: int) -> list[EmulatedCall]:
    def one(index: int) -> EmulatedCall:
        transport = FlaskTransport(app.test_client())
        caller = EmulatedCall(transport, "http://localhost", AUTH_TOKEN, from_=f"+7916{index:07d}")
        return caller.start()

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def test_the_checkpointer_copies_the_wal_into_the_database_file(make_app, db_path, tmp_path):
    app = make_app()
    checkpointer = app.extensions["ivr.checkpointer"]
    checkpointer.interval = 0.05
    checkpointer.start()
    try:
        before = rows_in_the_main_file(db_path, tmp_path)
        calls = start_calls(app, 12)
        assert all(call.result.statuses == [200] for call in calls)
        passes = checkpointer.passes
        wait_until(lambda: checkpointer.passes >= passes + 2)  # a pass after the last commit
        assert rows_in_the_main_file(db_path, tmp_path) == before + 12
    finally:
        checkpointer.close()
    assert not checkpointer.running and checkpointer.failures == 0


def test_without_the_checkpointer_the_new_calls_wait_in_the_wal(make_app, db_path, tmp_path):
    # The other side of the test above: nothing copies a few commits into the file by itself
    # (SQLite's own checkpoint waits for 1000 pages), so that test sees the checkpointer.
    app = make_app()
    before = rows_in_the_main_file(db_path, tmp_path)
    assert all(call.result.statuses == [200] for call in start_calls(app, 12))
    assert rows_in_the_main_file(db_path, tmp_path) == before


def test_request_connections_leave_checkpoints_to_a_running_checkpointer(make_app):
    app = make_app()

    def opened_on_a_new_thread():
        found = {}

        def open_them():
            with app.app_context():
                found["thread"] = autocheckpoint(get_db())

        worker = threading.Thread(target=open_them)
        worker.start()
        worker.join()
        return found["thread"]

    assert opened_on_a_new_thread() == database.AUTOCHECKPOINT_PAGES
    checkpointer = app.extensions["ivr.checkpointer"]
    checkpointer.start()
    try:
        assert opened_on_a_new_thread() == database.AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER
        with app.app_context():
            assert autocheckpoint(webhook_db()) == database.AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER
    finally:
        checkpointer.close()


def test_webhooks_from_many_threads_write_through_one_connection(make_app, db_path):
    app = make_app()
    statements: list[tuple[str, str]] = []

    with app.app_context():
        shared = webhook_db()
    shared.conn.set_trace_callback(
        lambda sql: statements.append((threading.current_thread().name, sql))
    )
    calls = start_calls(app, 16)
    assert all(call.result.statuses == [200] for call in calls)
    inserts = [(thread, sql) for thread, sql in statements if sql.startswith("INSERT INTO calls")]
    assert len(inserts) == 16  # every new call's row went through the shared connection
    assert len({thread for thread, _ in inserts}) > 1  # ... from more than one thread
    with database.connect(db_path) as db:  # and every one of them is committed
        sids = {row[0] for row in db.execute("SELECT call_sid FROM calls").fetchall()}
    assert {call.result.call_sid for call in calls} <= sids

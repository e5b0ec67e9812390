"""What a request reaches for: the database connections and the app's call service.

Two kinds of connection: `get_db()`, this thread's own (reads, the console's writes), and
`webhook_db()`, one connection the webhooks' transactions share (see there).
"""

from __future__ import annotations

import threading

from flask import Flask, current_app, g

from ivr import db as database
from ivr.calls import CallDesk
from ivr.config import Settings
from ivr.hours import Clock


def init_app(app: Flask) -> None:
    """Keep one connection per server thread, and release it cleanly after each request."""
    # One connection per server thread, kept from request to request: opening one for each
    # request (and closing it, which checkpoints the WAL when it is the last one) cost about
    # a third of a webhook's CPU time under load (tests/bench/bench_load.py).
    app.extensions["ivr.connections"] = threading.local()
    app.extensions["ivr.webhook_connection"] = _Shared()
    # `ivr serve` starts it: checkpoints off the request path (see database.Checkpointer).
    settings: Settings = app.extensions["ivr.settings"]
    app.extensions["ivr.checkpointer"] = database.Checkpointer(settings.db_path)
    app.teardown_appcontext(release_db)


def _connect() -> database.Database:
    settings: Settings = current_app.extensions["ivr.settings"]
    checkpointing = current_app.extensions["ivr.checkpointer"].running
    return database.connect(
        settings.db_path,
        settings.busy_timeout_ms,
        autocheckpoint=database.AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER
        if checkpointing
        else database.AUTOCHECKPOINT_PAGES,
    )


def get_db() -> database.Database:
    """This thread's database connection (opened on first use, kept for its next requests)."""
    if "db" not in g:
        connections = current_app.extensions["ivr.connections"]
        if getattr(connections, "db", None) is None:
            connections.db = _connect()
        g.db = connections.db
    return g.db


class _Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.db: database.Database | None = None


def webhook_db() -> database.Database:
    """The connection every webhook's transaction runs on: use it only inside
    `database.write_transaction`, whose write lock lets one thread at a time in.

    Webhook transactions are one at a time anyway (the write lock); on one connection they
    keep its page cache. A connection drops its whole page cache when another connection
    has committed since its last transaction, so with a connection per server thread
    every webhook re-read from the file the pages of the tables and indexes it touched
    (about 24 reads a new call, against 7 for a one-table insert; measured with strace
    under tests/bench/bench_webhook_cost.py's load).
    """
    shared: _Shared = current_app.extensions["ivr.webhook_connection"]
    if shared.db is None:
        with shared.lock:
            if shared.db is None:
                shared.db = _connect()
    return shared.db


def release_db(_error: BaseException | None) -> None:
    """After each request: never carry an open transaction into the thread's next request."""
    db = g.pop("db", None)
    if db is not None and db.conn.in_transaction:
        db.conn.rollback()  # writes go through write_transaction; this is a failed request's


def desk() -> CallDesk:
    """The call service of this app."""
    return current_app.extensions["ivr.desk"]


def wall_clock() -> Clock:
    """The real-time clock of this app (security records, session lifetimes)."""
    return current_app.extensions["ivr.wall_clock"]


def settings() -> Settings:
    """The app's settings."""
    return current_app.extensions["ivr.settings"]

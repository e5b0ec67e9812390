"""What a request reaches for: this thread's database connection and the app's call service."""

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
    app.teardown_appcontext(release_db)


def get_db() -> database.Database:
    """This thread's database connection (opened on first use, kept for its next requests)."""
    if "db" not in g:
        connections = current_app.extensions["ivr.connections"]
        if getattr(connections, "db", None) is None:
            settings: Settings = current_app.extensions["ivr.settings"]
            connections.db = database.connect(settings.db_path, settings.busy_timeout_ms)
        g.db = connections.db
    return g.db


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

"""What every `ivr` command shares: the database as the settings name it, and the time."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ivr import db as database
from ivr.config import ConfigError, load_settings


def timestamp_now() -> str:
    """Now, as the database stores instants."""
    return database.timestamp(datetime.now(UTC))


def open_db():
    """The database of IVR_DB, migrated; a settings error becomes the command's error."""
    try:
        settings = load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    db = database.connect(settings.db_path, settings.busy_timeout_ms)
    database.migrate(db)
    return db

"""The one place that talks to SQLite.

`core` holds the connection, the write lock, transactions and row helpers; `migrations` the
schema, one named step per version. Queries live in one module per subject: `calls`
(calls, timelines, stored webhook answers), `tickets`, `operators`, `speech` (recordings,
recognitions), `search` (the console's lists), `reports` (dashboard and /metrics counts)
and `audit` (audit trail, sign-in attempts). Plain SQL throughout, so a move to a server
database stays inside this package; see `core` for where sqlite-utils is used and why.
"""

from ivr.db.core import (
    AUTOCHECKPOINT_PAGES,
    AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER,
    Checkpointer,
    Database,
    connect,
    json_text,
    timestamp,
    write_transaction,
)
from ivr.db.migrations import MIGRATIONS, migrate, schema_version

__all__ = [
    "AUTOCHECKPOINT_PAGES",
    "AUTOCHECKPOINT_PAGES_WITH_CHECKPOINTER",
    "MIGRATIONS",
    "Checkpointer",
    "Database",
    "connect",
    "json_text",
    "migrate",
    "schema_version",
    "timestamp",
    "write_transaction",
]

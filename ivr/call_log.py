"""A call as scripts see it: the fields of `ivr calls list --json` and the console's CSV."""

from __future__ import annotations

from typing import Any

CALL_FIELDS = (
    "call_sid",
    "line",
    "language",
    "from",
    "to",
    "started_at",
    "ended_at",
    "status",
    "duration",
    "step",
    "outcome",
    "order_number",
    "category",
    "ticket_number",
    "operator_name",
    "after_hours",
)


def call_record(row: dict[str, Any]) -> dict[str, Any]:
    """A call row as `ivr calls list --json` prints it."""
    record = {**row, "from": row["from_number"], "to": row["to_number"]}
    record["after_hours"] = bool(row["after_hours"])
    return {name: record.get(name) for name in CALL_FIELDS}

"""`ivr calls`, `ivr tickets` and `ivr recordings`: what calls leave behind, read and deleted."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from ivr import db as database
from ivr.call_log import call_record
from ivr.cli.common import open_db
from ivr.config import load_settings
from ivr.db import calls as call_store
from ivr.db import tickets as ticket_store
from ivr.logs import mask_phone
from ivr.tickets import is_valid_ticket_number
from ivr.vocabulary import TicketStatus, values

TICKET_STATUSES = values(TicketStatus)


@click.group()
def calls() -> None:
    """Look at the call log; delete from it (personal data, 152-FZ)."""


@calls.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per call.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def calls_list(as_json: bool, limit: int) -> None:
    """The call log, newest first."""
    records = [call_record(row) for row in call_store.list_calls(open_db(), limit=limit)]
    if as_json:
        click.echo(json.dumps(records, ensure_ascii=False, indent=2))
        return
    for record in records:
        click.echo(
            f"{record['started_at'][:19]}  {record['call_sid'][:10]}…  {record['line']:<13} "
            f"{mask_phone(record['from']):<8} {record['step']:<14} {record['outcome'] or '-':<20} "
            f"order {record['order_number'] or '-':<10} ticket {record['ticket_number'] or '-':<9} "
            f"{record['operator_name'] or ''}"
        )


@calls.command("purge")
@click.option("--before", default=None, help="Delete calls started before this Moscow date.")
@click.option("--caller", default=None, help="Delete the calls from this number (+7...).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def calls_purge(before: str | None, caller: str | None, yes: bool) -> None:
    """Delete calls with their events, recognitions, recordings and tickets (152-FZ).

    The audit trail keeps that it happened (period, counts), not what was deleted.
    """
    from ivr.hours import MOSCOW
    from ivr.retention import parse_caller, parse_purge_date, purge_calls

    now = datetime.now(UTC)
    try:
        cutoff = parse_purge_date(before, now.astimezone(MOSCOW).date()) if before else None
        number = parse_caller(caller) if caller else None
        if cutoff is None and number is None:
            raise ValueError("give --before DATE, --caller NUMBER or both")
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if not yes:
        what = " and ".join(
            part
            for part in (
                f"started before {cutoff.date()} (Moscow)" if cutoff else "",
                f"from {mask_phone(number)}" if number else "",
            )
            if part
        )
        click.confirm(f"Delete every call {what} with all that is recorded about it?", abort=True)
    db = open_db()
    counts = purge_calls(db, load_settings().recordings_dir, now, before=cutoff, caller=number)
    click.echo(", ".join(f"{name}: {count}" for name, count in counts.items()))


@click.group()
def tickets() -> None:
    """Look at and update tickets."""


@tickets.command("list")
@click.option("--status", type=click.Choice(TICKET_STATUSES), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tickets_list(status: str | None, as_json: bool) -> None:
    """Tickets, newest first."""
    rows = ticket_store.list_tickets(open_db(), status=status)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['number']}  {row['status']:<11} {row['category']:<9} "
            f"order {row['order_number'] or '-':<10} due {row['due_at'][:10]}  "
            f"{row['operator_name'] or 'unassigned'}"
        )


@tickets.command("set-status")
@click.argument("number")
@click.argument("status", type=click.Choice(TICKET_STATUSES))
def tickets_set_status(number: str, status: str) -> None:
    """Change a ticket's status (the IVR's status menu reads it)."""
    if not is_valid_ticket_number(number):
        raise click.ClickException(f"{number!r} is not a valid ticket number (check digit)")
    db = open_db()
    with database.write_transaction(db):
        changed = ticket_store.set_ticket_status(db, number, status, datetime.now(UTC))
    if not changed:
        raise click.ClickException(f"no ticket {number}")
    click.echo(f"ticket {number} is now {status}")


@click.group()
def recordings() -> None:
    """Locally stored call recordings."""


@recordings.command("purge")
@click.option(
    "--days",
    type=click.IntRange(0, 100_000),
    default=None,
    help="Keep this many days (default: IVR_RECORDING_RETENTION_DAYS).",
)
def recordings_purge(days: int | None) -> None:
    """Delete recordings older than the retention period (files and their rows' paths)."""
    from datetime import timedelta

    from ivr.speech.recordings import purge

    settings = load_settings()
    keep = settings.recording_retention_days if days is None else days
    older_than = datetime.now(UTC) - timedelta(days=keep)
    count = purge(open_db(), settings.recordings_dir, older_than)
    click.echo(f"purged {count} recording(s) older than {keep} day(s)")

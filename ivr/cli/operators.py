"""`ivr operators`: the roster, console passwords, presence and sign-in locks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from ivr import db as database
from ivr.accounts import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    hash_password,
    normalise_login,
    password_problem,
)
from ivr.cli.common import open_db, timestamp_now
from ivr.db import acd as acd_store
from ivr.db import audit as audit_store
from ivr.db import operators as roster_store
from ivr.operators import parse_languages, parse_shift, validate_endpoint
from ivr.vocabulary import AuditAction, Presence, Role, values


@click.group()
def operators() -> None:
    """Manage the operator roster."""


@operators.command("add")
@click.argument("full_name")
@click.option("--endpoint", required=True, help="+E.164 number, sip:user@host or client:name.")
@click.option("--languages", default="ru", show_default=True, help="Comma-separated: ru,en.")
@click.option("--shift", default="08:00-20:00", show_default=True, help="Moscow time, HH:MM-HH:MM.")
@click.option("--name-en", default=None, help="Latin spelling for English-speaking callers.")
@click.option("--login", default=None, help="Console login (optional); asks for a password.")
@click.option("--admin", is_flag=True, help="Give the console's admin role.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the console password from the first line of stdin."
)
def operators_add(
    full_name, endpoint, languages, shift, name_en, login, admin, password_stdin
) -> None:
    """Add an operator (FULL_NAME as callers should hear it, e.g. the ФИО)."""
    if password_stdin and not login:
        raise click.ClickException("--password-stdin needs --login")
    try:
        if not full_name.strip() or len(full_name) > 200:
            raise ValueError("the full name must be 1-200 characters")
        login = normalise_login(login) if login else None
        start, end = parse_shift(shift)
        operator = {
            "full_name": full_name.strip(),
            "name_en": name_en,
            "login": login,
            "role": Role.ADMIN if admin else Role.OPERATOR,
            "languages": ",".join(parse_languages(languages)),
            "endpoint": validate_endpoint(endpoint),
            "shift_start": start,
            "shift_end": end,
            "created_at": timestamp_now(),
        }
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    db = open_db()
    if login and roster_store.operator_by_login(db, login):
        raise click.ClickException(f"login {login!r} is taken")
    password = _new_password(password_stdin, ask=_interactive()) if login else None
    if password is not None:
        operator["password_hash"] = hash_password(password)
    with database.write_transaction(db):
        operator_id = roster_store.insert_operator(db, operator)
    click.echo(f"added operator {operator_id}: {operator['full_name']}")
    if login and password is None:
        click.echo(f"no console password yet: set one with `ivr operators set-password {login}`")


@operators.command("set-password")
@click.argument("login")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
def operators_set_password(login: str, password_stdin: bool) -> None:
    """Set (or reset) the console password of the operator with this LOGIN."""
    db = open_db()
    row = roster_store.operator_by_login(db, login.strip().lower())
    if row is None:
        raise click.ClickException(f"no operator with login {login!r}")
    password_hash = hash_password(_new_password(password_stdin, ask=True))
    with database.write_transaction(db):
        roster_store.set_operator_password(db, row["id"], password_hash)
    click.echo(f"password set for {row['login']} ({row['full_name']}); their sessions have ended")


def _interactive() -> bool:
    return click.get_text_stream("stdin").isatty()


def _new_password(from_stdin: bool, ask: bool) -> str | None:
    """A new console password: stdin's first line, or typed twice at a hidden prompt."""
    if from_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\r\n")
    elif ask:
        password = click.prompt("Console password", hide_input=True, confirmation_prompt=True)
    else:
        return None
    problem = password_problem(password)
    if problem:
        raise click.ClickException(
            f"the password must have {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters"
        )
    return password


@operators.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def operators_list(as_json: bool) -> None:
    """List the roster with each operator's open tickets."""
    rows = roster_store.list_operators(open_db())
    for row in rows:
        row.pop("password_hash", None)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        click.echo("the roster is empty: add operators with `ivr operators add`")
    for row in rows:
        state = "active" if row["active"] else "inactive"
        click.echo(
            f"{row['id']:>4}  {row['full_name']:<32} {row['languages']:<6} "
            f"{row['shift_start']}-{row['shift_end']}  {row['endpoint']:<28} "
            f"open tickets: {row['open_tickets']:<4} {state} {row.get('presence', '')}"
        )


@operators.command("deactivate")
@click.argument("operator")
def operators_deactivate(operator: str) -> None:
    """Take an operator (id or login) off assignment; their tickets stay theirs."""
    db = open_db()
    row = roster_store.get_operator(db, operator)
    if row is None:
        raise click.ClickException(f"no operator {operator!r}")
    with database.write_transaction(db):
        roster_store.set_operator_active(db, row["id"], False)
    click.echo(f"deactivated operator {row['id']}: {row['full_name']}")


@operators.command("status")
@click.argument("login")
@click.argument("presence", type=click.Choice(values(Presence)))
def operators_status(login: str, presence: str) -> None:
    """Set LOGIN (or an id) available for queued callers, or away."""
    db = open_db()
    row = roster_store.get_operator(db, login.strip())
    if row is None:
        raise click.ClickException(f"no operator {login!r}")
    now = datetime.now(UTC)
    with database.write_transaction(db):
        changed = acd_store.set_presence(db, row["id"], presence, now)
        audit_store.add_audit(
            db,
            now,
            None,
            AuditAction.PRESENCE,
            row["login"] or str(row["id"]),
            {"from": row.get("presence"), "to": presence, "by": "cli"},
        )
    click.echo(
        f"operator {row['id']} ({row['full_name']}) is {presence}"
        + ("" if changed else " (unchanged)")
        + ("; the running service rings them within seconds" if presence == "available" else "")
    )


@operators.command("unlock")
@click.argument("login")
def operators_unlock(login: str) -> None:
    """Let LOGIN sign in again after too many failed attempts (they stay on record)."""
    db = open_db()
    row = roster_store.operator_by_login(db, login.strip().lower())
    if row is None:
        raise click.ClickException(f"no operator with login {login!r}")
    now = datetime.now(UTC)
    with database.write_transaction(db):
        cleared = audit_store.clear_login_failures(db, row["login"], now)
        audit_store.add_audit(
            db, now, None, AuditAction.SIGN_IN_UNLOCK, row["login"], {"cleared": cleared}
        )
    click.echo(f"cleared {cleared} failed sign-in attempt(s) of {row['login']}; they may sign in")

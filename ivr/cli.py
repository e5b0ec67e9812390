"""The `ivr` command: a thin layer over the library."""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import click

from ivr import db as database
from ivr.accounts import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    hash_password,
    normalise_login,
    password_problem,
)
from ivr.call_log import call_record
from ivr.config import ConfigError, load_settings
from ivr.db import acd as acd_store
from ivr.db import audit as audit_store
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.db import tickets as ticket_store
from ivr.demo import seed_demo_roster
from ivr.logs import mask_phone
from ivr.operators import parse_languages, parse_shift, validate_endpoint
from ivr.tickets import is_valid_ticket_number
from ivr.vocabulary import AuditAction, Line, Presence, Role, TicketStatus, values

TICKET_STATUSES = values(TicketStatus)
# The emulated media host of `ivr call`; `make run` allows recordings from 127.0.0.1:this only.
EMULATOR_MEDIA_PORT = 8081


def _now() -> str:
    return database.timestamp(datetime.now(UTC))


def _open_db():
    try:
        settings = load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    db = database.connect(settings.db_path, settings.busy_timeout_ms)
    database.migrate(db)
    return db


@click.group()
@click.version_option(package_name="hotline-ivr")
def main() -> None:
    """Hotline IVR: Twilio voice webhooks, call tree, tickets and operators."""


@main.command("init-db")
@click.option("--demo", is_flag=True, help="Also add the demo operator roster if it is empty.")
def init_db(demo: bool) -> None:
    """Create or migrate the database (safe to run again)."""
    db = _open_db()
    version = database.schema_version(db)
    db_file = db.conn.execute("PRAGMA database_list").fetchone()[2]
    accounts = Path(db_file).parent / "demo-accounts.txt" if db_file else None
    added = seed_demo_roster(db, accounts) if demo else 0
    click.echo(
        f"database {db_file} at schema version {version}"
        + (f"; {added} demo operators added" if added else "")
    )
    if demo and accounts is not None and accounts.exists():
        click.echo(f"demo console accounts (login, password) are in {accounts}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="Port to listen on.")
@click.option("--threads", default=16, show_default=True, type=int, help="Worker threads.")
def serve(host: str, port: int, threads: int) -> None:
    """Run the service on the production WSGI server (waitress)."""
    import waitress

    from ivr.web.app import create_app

    try:
        app = create_app()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    logging.getLogger("ivr.app").info(
        "serving", extra={"host": host, "port": port, "threads": threads}
    )
    click.echo(f"ivr serving on http://{host}:{port} (webhooks under /twilio/)", err=True)
    # create_server, not waitress.serve: serve() calls logging.basicConfig(), which would
    # print every JSON log record a second time as plain text.
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="ivr",
        # Oversized bodies get 413 from the headers alone, before waitress buffers them.
        max_request_body_size=app.extensions["ivr.settings"].max_request_bytes,
    )
    media_socket = None
    live = app.extensions.get("ivr.live")
    if live is not None:  # stream mode: the Media Streams WebSocket on its own port
        from ivr.web.media_socket import MediaStreamServer

        media_port = app.extensions["ivr.settings"].media_stream_port
        try:
            media_socket = MediaStreamServer(
                live,
                host,
                media_port,
                max_speedup=app.extensions["ivr.settings"].media_max_speedup,
            )
        except OSError as error:
            raise click.ClickException(
                f"cannot listen for Media Streams on {host}:{media_port} "
                f"(IVR_MEDIA_STREAM_PORT): {error}"
            ) from None
        live.base_url = live.base_url or f"http://{host}:{port}"
        click.echo(f"media streams on ws://{host}:{media_socket.port}/twilio/media", err=True)
    else:
        click.echo("speech: record mode or keypad only (no live speech stream)", err=True)
    try:
        server.run()
    finally:
        if media_socket is not None:
            media_socket.close()
            live.close()
        app.extensions["ivr.speech"].close()
        app.extensions["ivr.dispatcher"].close()


# Operators -------------------------------------------------------------------------------


@main.group()
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
            "created_at": _now(),
        }
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    db = _open_db()
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
    db = _open_db()
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
    rows = roster_store.list_operators(_open_db())
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
    db = _open_db()
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
    db = _open_db()
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
    db = _open_db()
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


# Calls and tickets -----------------------------------------------------------------------


@main.group()
def calls() -> None:
    """Look at the call log; delete from it (personal data, 152-FZ)."""


@calls.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per call.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def calls_list(as_json: bool, limit: int) -> None:
    """The call log, newest first."""
    records = [call_record(row) for row in call_store.list_calls(_open_db(), limit=limit)]
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
    db = _open_db()
    counts = purge_calls(db, load_settings().recordings_dir, now, before=cutoff, caller=number)
    click.echo(", ".join(f"{name}: {count}" for name, count in counts.items()))


@main.group()
def tickets() -> None:
    """Look at and update tickets."""


@tickets.command("list")
@click.option("--status", type=click.Choice(TICKET_STATUSES), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tickets_list(status: str | None, as_json: bool) -> None:
    """Tickets, newest first."""
    rows = ticket_store.list_tickets(_open_db(), status=status)
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
    db = _open_db()
    with database.write_transaction(db):
        changed = ticket_store.set_ticket_status(db, number, status, datetime.now(UTC))
    if not changed:
        raise click.ClickException(f"no ticket {number}")
    click.echo(f"ticket {number} is now {status}")


@main.command("dev-token")
@click.option(
    "--file",
    "path",
    default="instance/dev-auth-token",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to keep the local token.",
)
def dev_token(path: str) -> None:
    """Print a local development auth token, creating it once (never use it in production)."""
    token_file = Path(path)
    if not token_file.exists():
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secrets.token_hex(16) + "\n")
        token_file.chmod(0o600)
        click.echo(f"generated a local auth token in {token_file}", err=True)
    click.echo(token_file.read_text().strip())


# Emulator: drive calls like Twilio does ---------------------------------------------------


def _auth_token(token: str | None) -> str:
    """--token, else IVR_TWILIO_AUTH_TOKEN, else the local dev token `make run` uses."""
    if token:
        return token
    settings_token = load_settings().auth_token
    if settings_token:
        return settings_token
    dev_file = Path("instance/dev-auth-token")
    if dev_file.exists():
        return dev_file.read_text().strip()
    raise click.ClickException(
        "no auth token: pass --token, set IVR_TWILIO_AUTH_TOKEN, or run `ivr dev-token`"
    )


TWILIO_PORT_HELP = (
    "Run the Twilio REST stand-in on 127.0.0.1:PORT (for a server started with "
    "IVR_TWILIO_API_URL=http://127.0.0.1:PORT); when the app is started here, it gets one "
    "on a free port by itself."
)


def _start_twilio_stand_in(base_url: str | None, token: str | None, port: int | None):
    """The REST stand-in: the app started here gets its credentials, a running server's
    are read from IVR_TWILIO_ACCOUNT_SID and the auth token."""
    from ivr.emulator import TwilioStandIn

    account_sid = auth_token = None
    if base_url is not None:
        account_sid = load_settings().account_sid
        if not account_sid:
            raise click.ClickException(
                "the REST stand-in needs the server's IVR_TWILIO_ACCOUNT_SID (its requests "
                "are checked against it)"
            )
        auth_token = _auth_token(token)
    try:
        return TwilioStandIn(account_sid, auth_token, port=port or 0)
    except OSError as error:
        raise click.ClickException(
            f"the REST stand-in cannot listen on 127.0.0.1:{port} ({error.strerror})"
        ) from None


def _app_settings_for(stand_in) -> dict:
    """Settings for an app started here so that its REST requests go to the stand-in."""
    if stand_in is None:
        return {}
    from dataclasses import fields

    from ivr.config import Settings

    settings = {"auth_token": stand_in.auth_token, "account_sid": stand_in.account_sid}
    # IVR_TWILIO_API_URL is read by the service side of issue 11; until it is, an app
    # started here has no REST client to point at the stand-in.
    if "twilio_api_url" in {item.name for item in fields(Settings)}:
        settings["twilio_api_url"] = stand_in.base_url
    return settings


@main.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--base-url", default=None, help="A running server; default: start the app here.")
@click.option("--token", default=None, help="Auth token to sign with (see README).")
@click.option(
    "--db",
    "db_path",
    default=None,
    help="The server's database, to check call records (default: IVR_DB).",
)
@click.option(
    "--load",
    "load_calls",
    default=0,
    type=click.IntRange(0, 100_000),
    help="Load mode: run this many scenario runs concurrently and report latency.",
)
@click.option(
    "--concurrency",
    default=50,
    show_default=True,
    type=click.IntRange(1, 500),
    help="Load mode: runs at once.",
)
@click.option(
    "--think",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 60),
    help="Load mode: seconds a caller listens before each answer (about; 0 = at once).",
)
@click.option("--quiet", is_flag=True, help="Only the verdicts, not the transcripts.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.option("--twilio-port", default=None, type=click.IntRange(1, 65535), help=TWILIO_PORT_HELP)
def simulate(
    scenarios, base_url, token, db_path, load_calls, concurrency, think, quiet, as_json, twilio_port
):
    """Run scenario files through the Twilio emulator; exit 1 if an expectation fails."""
    from ivr.devserver import LocalServer
    from ivr.emulator import as_dict
    from ivr.scenarios import Runner, ScenarioError, format_report, load_scenario, run_load

    try:
        loaded = [load_scenario(path) for path in scenarios]
    except ScenarioError as error:
        raise click.ClickException(str(error)) from None
    stand_in = None
    if base_url is None or twilio_port is not None:
        stand_in = _start_twilio_stand_in(base_url, token, twilio_port)
    elif any(scenario.needs_twilio for scenario in loaded):
        raise click.ClickException(
            "these scenarios ring operators' phones: pass --twilio-port, the port of the "
            "server's IVR_TWILIO_API_URL"
        )
    server = None
    account_sid = load_settings().account_sid or None
    if base_url is None:
        server = LocalServer(threads=32, **_app_settings_for(stand_in))
        base_url, token, db_path = server.base_url, server.auth_token, server.db_path
        account_sid = server.account_sid or account_sid
    else:
        token = _auth_token(token)
        db_path = db_path or load_settings().db_path
        if not Path(db_path).exists():
            db_path = None
    try:
        with Runner(
            base_url, token, db_path, account_sid=account_sid, think_time=think, twilio=stand_in
        ) as runner:
            if load_calls:
                report = run_load(runner, loaded, load_calls, concurrency)
                summary = report.summary()
                if as_json:
                    click.echo(json.dumps(summary, indent=2))
                else:
                    click.echo(_format_load(summary, concurrency))
                    for failure in report.failures[:20]:
                        click.echo(f"FAILED: {failure}")
                failed = report.failed > 0
            else:
                reports = [runner.run(scenario) for scenario in loaded]
                if as_json:
                    click.echo(
                        json.dumps(
                            [
                                {
                                    "scenario": r.scenario.name,
                                    "passed": r.passed,
                                    "failures": r.failures,
                                    "calls": [
                                        as_dict(call.result)
                                        | {"ticket": call.ticket, "record": call.record}
                                        for call in r.calls
                                    ],
                                }
                                for r in reports
                            ],
                            ensure_ascii=False,
                            indent=2,
                        )
                    )
                else:
                    for report in reports:
                        click.echo(format_report(report, verbose=not quiet))
                    passed = sum(report.passed for report in reports)
                    click.echo(f"{passed} passed, {len(reports) - passed} failed")
                failed = not all(report.passed for report in reports)
    finally:
        if server is not None:
            server.close()
        if stand_in is not None:
            stand_in.close()
    if failed:
        sys.exit(1)


def _format_load(summary: dict, concurrency: int) -> str:
    latency = summary["latency_ms"]
    return (
        f"{summary['calls']} runs ({concurrency} at a time) in {summary['seconds']} s: "
        f"{summary['completed']} completed, {summary['failed']} failed\n"
        f"webhooks: {summary['webhooks']}; latency ms p50 {latency['p50']}, p95 {latency['p95']}, "
        f"p99 {latency['p99']}, max {latency['max']}\n"
        f"tickets read out: {summary['tickets']}, distinct: {summary['distinct_tickets']}"
    )


def media_server(port: int):
    """The emulator's media host on 127.0.0.1:port: the one host `make run` fetches from."""
    from http.server import ThreadingHTTPServer

    from ivr.emulator import MediaServer

    media = MediaServer()
    # MediaServer listens on a free port; move it to the agreed one (until it takes a port).
    handler = media.server.RequestHandlerClass
    media.close()
    try:
        media.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise click.ClickException(
            f"the media host cannot listen on 127.0.0.1:{port} ({error.strerror}); "
            f"choose another with --media-port and IVR_RECORDING_HOSTS=127.0.0.1:PORT"
        ) from None
    media.server.daemon_threads = True
    media.thread = threading.Thread(target=media.server.serve_forever, daemon=True)
    media.thread.start()
    return media


@main.command()
@click.option("--base-url", default=None, help="A running server; default: start the app here.")
@click.option("--token", default=None, help="Auth token to sign with.")
@click.option(
    "--line",
    type=click.Choice(values(Line)),
    default="domestic",
    show_default=True,
    help="Which number to call.",
)
@click.option(
    "--from", "from_", default="+79161234567", show_default=True, help="The caller's number."
)
@click.option("--at", default=None, help="Place the call at this instant (ISO-8601 with offset).")
@click.option(
    "--media-port",
    default=EMULATOR_MEDIA_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    envvar="IVR_MEDIA_PORT",
    help="Port of the emulated media host on 127.0.0.1 (`make run` fetches recordings there).",
)
@click.option("--twilio-port", default=None, type=click.IntRange(1, 65535), help=TWILIO_PORT_HELP)
def call(base_url, token, line, from_, at, media_port, twilio_port):
    """Call the IVR from the terminal: read what it says, type keys or a WAV path."""
    from ivr.devserver import LocalServer
    from ivr.emulator import EmulatedCall, HttpTransport
    from ivr.hours import parse_instant
    from ivr.scenarios import LINES, heard_ticket

    if at:
        try:
            parse_instant(at)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    stand_in = None
    if base_url is None or twilio_port is not None:
        stand_in = _start_twilio_stand_in(base_url, token, twilio_port)
    server = None
    account_sid = None
    if base_url is None:
        server = LocalServer(**_app_settings_for(stand_in))
        base_url, token, account_sid = server.base_url, server.auth_token, server.account_sid
        click.echo(f"(started the IVR on {base_url} with the demo roster)")
    else:
        token = _auth_token(token)
        account_sid = load_settings().account_sid or None
    if stand_in is not None:
        click.echo(f"(Twilio's REST API stand-in on {stand_in.base_url}; operators answer)")
    media = media_server(media_port)
    emulated = EmulatedCall(
        HttpTransport(),
        base_url,
        token,
        to=LINES[line],
        from_=from_,
        at=at,
        media=media,
        account_sid=account_sid,
        twilio=stand_in,
        loopback_streams=server is not None,
    )
    shown = 0
    try:
        emulated.start()
        while True:
            for item in emulated.result.heard[shown:]:
                if item.kind in ("say", "queue"):
                    click.echo(f"IVR: {item.text}")
                elif item.kind in ("dial", "bridge", "enqueue", "record", "play", "error"):
                    click.echo(f"  [{item.kind}: {item.text}]")
            shown = len(emulated.result.heard)
            if emulated.in_queue and stand_in is not None:
                click.echo("  [on hold until an operator's call takes you; Ctrl-C hangs up]")
                emulated.wait_for_operator(3600)
                continue
            if emulated.result.ended or emulated.waiting_for is None:
                break
            hint = (
                "keys, Enter = silence, h = hang up"
                if emulated.waiting_for == "Gather"
                else "path to a WAV/MP3 to say, Enter = silence, # = skip, h = hang up"
            )
            answer = click.prompt(f"[{hint}]", default="", show_default=False).strip()
            if answer == "h":
                emulated.hang_up()
            elif not answer:
                emulated.silence()
            elif emulated.waiting_for == "Gather" and Path(answer).is_file():
                emulated.speak(answer)  # over the Media Stream, when the prompt listens
            elif emulated.waiting_for == "Record" and answer != "#":
                if not Path(answer).is_file():
                    click.echo(f"no such file: {answer}")
                    continue
                emulated.speak(answer)
            else:
                emulated.press(answer)
        if not emulated.result.ended:
            emulated.hang_up()
        emulated.wait_for_callbacks()
        click.echo(
            f"call ended: {emulated.result.end}; ticket {heard_ticket(emulated.result) or '-'}"
            f"; call SID {emulated.result.call_sid}"
        )
    except (click.Abort, EOFError):
        emulated.hang_up()
        click.echo("\ncaller hung up")
    finally:
        media.close()
        if server is not None:
            server.close()
        if stand_in is not None:
            stand_in.close()


# Speech models and recordings -------------------------------------------------------------


@main.group()
def models() -> None:
    """Vosk speech models: the catalog and what is installed."""


@models.command("list")
@click.option(
    "--dir",
    "models_dir",
    default="models",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where models are installed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_list(models_dir: str, as_json: bool) -> None:
    """Known models, which are installed, and which the settings select."""
    from ivr.models import list_models

    selected = {path: language for language, path in load_settings().vosk_models.items()}
    rows = []
    for status in list_models(models_dir):
        info = status.info
        path = str(status.path) if status.path else None
        rows.append(
            {
                "name": status.name,
                "language": info.language if info else None,
                "size_mb": info.size_mb if info else None,
                "sample_rate": info.sample_rate if info else None,
                "installed": status.installed,
                "path": path,
                "selected_for": selected.get(path) if path else None,
                "url": info.url if info else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        where = row["path"] if row["installed"] else "not installed"
        chosen = f"  <- IVR_VOSK_MODEL_{row['selected_for'].upper()}" if row["selected_for"] else ""
        click.echo(
            f"{row['name']:<32} {row['language'] or '?':<3} {row['size_mb'] or '?':>5} MB "
            f"{row['sample_rate'] or '?':>6} Hz  {where}{chosen}"
        )


@models.command("fetch")
@click.argument("name")
@click.option(
    "--dir",
    "models_dir",
    default="models",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where to install it.",
)
def models_fetch(name: str, models_dir: str) -> None:
    """Download a catalog model (needs internet), check it and unpack it atomically."""
    from ivr.models import ModelError, fetch_model

    with click.progressbar(length=0, label=f"fetching {name}") as bar:

        def progress(done: int, total: int | None) -> None:
            if total and bar.length != total:
                bar.length = total
            bar.update(done - bar.pos)

        try:
            path = fetch_model(name, models_dir, progress)
        except (ModelError, OSError) as error:
            raise click.ClickException(str(error)) from None
    click.echo(f"installed {name} in {path}; select it with IVR_VOSK_MODEL_<LANG>={path}")


@main.group()
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
    count = purge(_open_db(), settings.recordings_dir, older_than)
    click.echo(f"purged {count} recording(s) older than {keep} day(s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`ivr simulate` and `ivr call`: drive calls like Twilio does, through the emulator.

Also the emulator's media host and the Twilio REST stand-in these commands start.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
from pathlib import Path

import click

from ivr.config import load_settings
from ivr.vocabulary import Line, values

# The emulated media host of `ivr call`; `make run` allows recordings from 127.0.0.1:this only.
EMULATOR_MEDIA_PORT = 8081


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


@click.command()
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
    from ivr.scenarios import (
        Runner,
        ScenarioError,
        format_report,
        load_scenario,
        run_load,
        server_overrides,
    )

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

                def run_one(scenario):
                    if not scenario.server:
                        return runner.run(scenario)
                    if server is None:
                        click.echo(
                            f"{scenario.name}: its [server] settings apply only to an IVR "
                            "that ivr simulate starts itself; running it as the server is",
                            err=True,
                        )
                        return runner.run(scenario)
                    # Its own IVR with the scenario's settings, and the same stand-in.
                    own = LocalServer(
                        threads=8, **_app_settings_for(stand_in), **server_overrides(scenario)
                    )
                    try:
                        with Runner(
                            own.base_url,
                            own.auth_token,
                            own.db_path,
                            account_sid=own.account_sid or account_sid,
                            think_time=think,
                            twilio=stand_in,
                        ) as own_runner:
                            return own_runner.run(scenario)
                    finally:
                        own.close()

                reports = [run_one(scenario) for scenario in loaded]
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


@click.command()
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
        # Our own server on this machine (started here, or `make run`'s): its Media Streams
        # socket is ws:// on loopback, which Twilio itself would never be given.
        loopback_streams=server is not None
        or urllib.parse.urlsplit(base_url).hostname in ("127.0.0.1", "localhost"),
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

"""`ivr init-db`, `serve`, `dev-token` and `models`: setting up and running the service."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import click

from ivr import db as database
from ivr.cli.common import open_db
from ivr.config import ConfigError, load_settings
from ivr.demo import seed_demo_roster


@click.command("init-db")
@click.option("--demo", is_flag=True, help="Also add the demo operator roster if it is empty.")
def init_db(demo: bool) -> None:
    """Create or migrate the database (safe to run again)."""
    db = open_db()
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


@click.command()
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
    checkpointer = app.extensions["ivr.checkpointer"]
    checkpointer.start()  # before the first request opens its connection
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
        checkpointer.close()


@click.command("dev-token")
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


models_dir_option = click.option(
    "--dir",
    "models_dir",
    default="models",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where models are installed.",
)


@click.group()
def models() -> None:
    """Vosk speech models: the catalog and what is installed."""


@models.command("list")
@models_dir_option
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


@models.command("ensure")
@models_dir_option
def models_ensure(models_dir: str) -> None:
    """For `make run`: the small Russian model, fetched when missing; one line either way.

    Offline it says in one line that speech is off and how to turn it on, and exits 0:
    the service still starts, keypad only.
    """
    from ivr.models import ensure_default_model

    def progress(done: int, total: int | None) -> None:
        if total:
            click.echo(f"\rfetching the Russian speech model: {done * 100 // total}%", nl=False)

    on, line = ensure_default_model(models_dir, progress)
    click.echo(("\n" if on and "fetching" in line else "") + line)


@models.command("env")
@models_dir_option
def models_env(models_dir: str) -> None:
    """For `make run`: `IVR_VOSK_MODEL_<LANG>=path` for each default model in the folder
    (languages the environment already sets are left alone), one per line."""
    from ivr.models import models_for_run

    for language, path in models_for_run(models_dir).items():
        click.echo(f"IVR_VOSK_MODEL_{language.upper()}={path}")

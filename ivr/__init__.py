"""Hotline IVR: Twilio webhooks, the call tree, tickets and operators."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify

from ivr import db as database
from ivr.config import Settings, default_prompts_dir, load_settings
from ivr.hours import Clock
from ivr.logs import configure_logging
from ivr.metrics import Metrics
from ivr.prompts import load_prompts
from ivr.web.auth import configure_sessions

log = logging.getLogger("ivr.app")


def create_app(config: Mapping[str, Any] | None = None, speech_engine: Any = None) -> Flask:
    """Build the app: settings, database, prompts, clock, speech, blueprints.

    `speech_engine` replaces the Vosk engine the settings would build (tests script it).
    """
    configure_logging()
    settings: Settings = load_settings().with_overrides(dict(config or {}))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    configure_sessions(app, settings)  # secret key (IVR_SECRET_KEY or instance/secret-key)
    app.extensions["ivr.settings"] = settings
    app.extensions["ivr.clock"] = Clock(fixed=settings.now)
    prompts_dir = Path(settings.prompts_dir) if settings.prompts_dir else default_prompts_dir()
    app.extensions["ivr.prompts"] = load_prompts(prompts_dir)

    with database.connect(settings.db_path, settings.busy_timeout_ms) as db:
        database.migrate(db)
        if not database.list_operators(db, active_only=True):
            log.warning(
                "the operator roster is empty: callers get tickets but no operator name; "
                "add operators with `ivr operators add`"
            )
    app.extensions["ivr.speech"] = build_speech_service(settings, speech_engine)
    app.extensions["ivr.metrics"] = Metrics()
    if not settings.auth_token:
        log.error(
            "IVR_TWILIO_AUTH_TOKEN is not set: every webhook will be refused with 403 "
            "(unsigned requests are never accepted)"
        )

    # One connection per server thread, kept from request to request: opening one for each
    # request (and closing it, which checkpoints the WAL when it is the last one) cost about
    # a third of a webhook's CPU time under load (tests/bench/bench_load.py).
    app.extensions["ivr.connections"] = threading.local()

    @app.teardown_appcontext
    def release_db(_error: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None and db.conn.in_transaction:
            # Writes go through write_transaction; never carry anything into the next request.
            db.conn.rollback()

    @app.get("/metrics")
    def metrics():
        db = get_db()
        outcomes = {
            row[0] or "in_progress": row[1]
            for row in db.execute("SELECT outcome, count(*) FROM calls GROUP BY outcome")
        }
        recognitions = {
            ("recognised" if row[0] else "not_recognised") if row[1] == "done" else "pending": row[
                2
            ]
            for row in db.execute(
                "SELECT ok, status, count(*) FROM recognitions GROUP BY ok, status"
            )
        }
        text = app.extensions["ivr.metrics"].render(outcomes, recognitions)
        return text, 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}

    @app.get("/healthz")
    def healthz():
        try:
            version = database.schema_version(get_db())
            healthy = True
        except Exception:  # noqa: BLE001 - health reports the failure instead of raising
            log.exception("health check: database unreachable")
            version, healthy = None, False
        body = {
            "status": "ok" if healthy else "error",
            "database": {"schema_version": version},
            "speech": app.extensions["ivr.speech"].health(),
        }
        return jsonify(body), 200 if healthy else 503

    from ivr.web.console import bp as console_blueprint
    from ivr.web.voice import bp as voice_blueprint

    app.register_blueprint(voice_blueprint)
    app.register_blueprint(console_blueprint)
    return app


def build_speech_service(settings: Settings, engine: Any = None):
    """The background recogniser: Vosk workers for the configured models, the fetcher."""
    from ivr.speech.numbers import number_words
    from ivr.speech.recordings import RecordingFetcher
    from ivr.speech.service import SpeechService

    built_here = engine is None and bool(settings.vosk_models)
    if built_here:
        from ivr.speech.vosk import SpeechEngine

        engine = SpeechEngine(dict(settings.vosk_models), workers=settings.speech_workers)
    for language in ("ru", "en"):
        if engine is None or language not in engine.available_languages():
            log.warning(
                "no Vosk model for %s (IVR_VOSK_MODEL_%s): order numbers by keypad only",
                language,
                language.upper(),
            )
    service = SpeechService(
        settings.db_path,
        engine,
        RecordingFetcher.from_settings(settings),
        number_words,
        settings.busy_timeout_ms,
        delete_remote=settings.delete_twilio_recordings,
    )
    if built_here:
        service.check_models(dict(settings.vosk_models))
    return service


def get_db():
    """This thread's database connection (opened on first use, kept for its next requests)."""
    from flask import current_app

    if "db" not in g:
        connections = current_app.extensions["ivr.connections"]
        if getattr(connections, "db", None) is None:
            settings: Settings = current_app.extensions["ivr.settings"]
            connections.db = database.connect(settings.db_path, settings.busy_timeout_ms)
        g.db = connections.db
    return g.db

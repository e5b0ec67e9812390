"""The app factory (flaskr's shape): settings, services, blueprints; /healthz, /metrics."""

from __future__ import annotations

import hmac
import importlib
import ipaddress
import logging
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from ivr import db as database
from ivr.calls import CallDesk
from ivr.config import ConfigError, Settings, default_prompts_dir, load_settings
from ivr.db import operators as roster_store
from ivr.db import reports
from ivr.dispatch import Dispatcher
from ivr.hours import Clock
from ivr.logs import configure_logging
from ivr.metrics import Metrics
from ivr.prompts import load_prompts
from ivr.speech.live import LiveSpeech
from ivr.speech.service import build_speech_service
from ivr.web import context
from ivr.web.auth import configure_sessions
from ivr.web.console import bp as console_blueprint
from ivr.web.context import get_db
from ivr.web.operator_hooks import bp as operator_hooks_blueprint
from ivr.web.voice import bp as voice_blueprint

log = logging.getLogger("ivr.app")

ops = Blueprint("ops", __name__)


def create_app(
    config: Mapping[str, Any] | None = None,
    speech_engine: Any = None,
    twilio_api: Any = None,
    streaming_recognizer: Any = None,
) -> Flask:
    """Build the app: settings, database, prompts, clock, speech, dispatcher, blueprints.

    `config` overrides settings by field name (tests); `speech_engine` replaces the Vosk
    engine the settings would build (tests script it); `twilio_api` replaces the REST
    adapter (`ivr.twilio_api.TwilioApi`) the settings would build; `streaming_recognizer`
    replaces the live recogniser the settings would build.
    """
    configure_logging()
    settings: Settings = load_settings().with_overrides(dict(config or {}))
    if settings.vosk_models and not settings.account_sid:
        raise ConfigError(
            "IVR_TWILIO_ACCOUNT_SID is not set: speech needs it to download recordings "
            "(Twilio's HTTP auth on media URLs takes the account SID and auth token)"
        )
    app = Flask(__name__.split(".")[0])
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    configure_sessions(app, settings)  # secret key (IVR_SECRET_KEY or instance/secret-key)
    prompts_dir = Path(settings.prompts_dir) if settings.prompts_dir else default_prompts_dir()
    speech = build_speech_service(settings, speech_engine)
    app.extensions["ivr.settings"] = settings
    app.extensions["ivr.speech"] = speech
    app.extensions["ivr.metrics"] = Metrics()
    # The real time for security records and session lifetimes (IVR_NOW does not move it;
    # tests replace its source to let hours pass).
    app.extensions["ivr.wall_clock"] = Clock()
    api = twilio_api if twilio_api is not None else build_twilio_api(settings)
    live = _build_live_speech(app, settings, speech_engine, api, streaming_recognizer)
    languages = speech.languages
    if live is not None:
        recognizer = live.recognizer

        def languages() -> tuple[str, ...]:
            return tuple(sorted(set(speech.languages()) | set(recognizer.available_languages())))

    app.extensions["ivr.desk"] = CallDesk(
        settings=settings,
        clock=Clock(fixed=settings.now),
        prompts=load_prompts(prompts_dir),
        speech_languages=languages,
        speech_mode="stream" if live is not None else "record",
        wall_clock=app.extensions["ivr.wall_clock"],
    )
    init_db(app, settings)
    dispatcher = Dispatcher(app.extensions["ivr.desk"], api)
    app.extensions["ivr.dispatcher"] = dispatcher
    dispatcher.start()  # the sweep: a restart strands no queued caller
    if not settings.auth_token:
        log.error(
            "IVR_TWILIO_AUTH_TOKEN is not set: every webhook will be refused with 403 "
            "(unsigned requests are never accepted)"
        )

    app.register_blueprint(ops)
    app.register_blueprint(voice_blueprint)
    app.register_blueprint(operator_hooks_blueprint)
    app.register_blueprint(console_blueprint)
    prefix = urllib.parse.urlsplit(settings.public_url).path.rstrip("/")
    if prefix:
        app.wsgi_app = _PathPrefix(app.wsgi_app, prefix)  # type: ignore[method-assign]
    return app


def build_twilio_api(settings: Settings) -> Any:
    """The REST adapter, when Twilio's REST API is configured (IVR_TWILIO_API_URL set to
    something else than Twilio's, or the account SID and auth token); None otherwise."""
    configured = settings.twilio_api_url != Settings.twilio_api_url or (
        settings.account_sid and settings.auth_token
    )
    if not configured:
        return None
    try:
        module = importlib.import_module("ivr.twilio_api")
    except ImportError:
        log.error("ivr.twilio_api is missing: queued callers will not be dispatched")
        return None
    return module.TwilioApi.from_settings(settings)


def _build_live_speech(
    app: Flask, settings: Settings, speech_engine: Any, twilio_api: Any, recognizer: Any
) -> LiveSpeech | None:
    """Stream mode's parts (live recogniser, REST adapter), or None for the Record path.

    IVR_SPEECH_MODE decides; unset, stream when a model or vosk-server is configured (and
    no scripted batch engine replaces Vosk, as in tests of the Record path).
    """
    configured = bool(settings.vosk_models or settings.vosk_server_urls)
    mode = settings.speech_mode or (
        "stream" if recognizer is not None or (configured and speech_engine is None) else "record"
    )
    if mode != "stream" or not (configured or recognizer is not None):
        return None
    if twilio_api is None:
        try:
            module = importlib.import_module("ivr.twilio_api")
            twilio_api = module.TwilioApi.from_settings(settings)
        except Exception:  # noqa: BLE001 - no REST adapter: speech still works, recorded
            log.exception("no Twilio REST adapter: speech falls back to IVR_SPEECH_MODE=record")
            return None
    if recognizer is None:
        from ivr.speech.backends import build_streaming_recognizer

        recognizer = build_streaming_recognizer(
            dict(settings.vosk_models), settings.vosk_server_urls, workers=settings.speech_workers
        )
    secret = app.secret_key if isinstance(app.secret_key, bytes) else str(app.secret_key).encode()
    live = LiveSpeech(settings, recognizer, twilio_api, secret)
    app.extensions["ivr.live"] = live
    return live


class _PathPrefix:
    """Serve under IVR_PUBLIC_URL's path (e.g. /ivr) whether or not the proxy strips it.

    A request for /ivr/twilio/voice runs as /twilio/voice with SCRIPT_NAME /ivr; one the
    proxy already stripped (/twilio/voice) runs as it is. TwiML URLs carry the prefix
    either way (ivr.web.twilio_http), so Twilio resolves them to the public path.
    """

    def __init__(self, app: Any, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
            environ["PATH_INFO"] = path[len(self.prefix) :] or "/"
        return self.app(environ, start_response)


def init_db(app: Flask, settings: Settings) -> None:
    """Migrate the database, warn about an empty roster, and manage per-thread connections."""
    with database.connect(settings.db_path, settings.busy_timeout_ms) as db:
        database.migrate(db)
        if not roster_store.list_operators(db, active_only=True):
            log.warning(
                "the operator roster is empty: callers get tickets but no operator name; "
                "add operators with `ivr operators add`"
            )
    context.init_app(app)


def metrics_refusal() -> tuple[str, int, dict[str, str]] | None:
    """Who may scrape /metrics: a bearer of IVR_METRICS_TOKEN if one is set, else loopback."""
    token = current_app.extensions["ivr.settings"].metrics_token
    if token:
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return None
        return "bearer token required\n", 401, {"WWW-Authenticate": "Bearer"}
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    return None if loopback else ("metrics are served to loopback only\n", 403, {})


@ops.get("/metrics")
def metrics():
    """Prometheus' text format: calls by outcome, recognitions, webhook latency."""
    if refusal := metrics_refusal():
        return refusal
    db = get_db()
    text = current_app.extensions["ivr.metrics"].render(
        reports.all_outcomes(db), reports.all_recognitions(db)
    )
    return text, 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}


@ops.get("/healthz")
def healthz():
    """Database reachable (with its schema version) and the speech engine's state."""
    try:
        version = database.schema_version(get_db())
        healthy = True
    except Exception:  # noqa: BLE001 - health reports the failure instead of raising
        log.exception("health check: database unreachable")
        version, healthy = None, False
    body = {
        "status": "ok" if healthy else "error",
        "database": {"schema_version": version},
        "speech": current_app.extensions["ivr.speech"].health(),
        "twilio_rest": current_app.extensions["ivr.dispatcher"].health(),
    }
    live = current_app.extensions.get("ivr.live")
    if live is not None:
        body["live_speech"] = live.health()
    return jsonify(body), 200 if healthy else 503

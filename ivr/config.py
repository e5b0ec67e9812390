"""Settings from the environment (IVR_*), with defaults in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time
from pathlib import Path

from ivr.hours import OpeningHours, parse_instant
from ivr.vocabulary import Category, Language, values

CATEGORIES = values(Category)

# Hours the caller is told a request of each category usually takes to resolve.
DEFAULT_RESOLUTION_HOURS = {
    Category.DELIVERY: 24,
    Category.RETURNS: 72,
    Category.PAYMENT: 120,
    Category.QUALITY: 72,
    Category.OTHER: 48,
}


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    db_path: str = "instance/ivr.sqlite3"
    account_sid: str = ""
    auth_token: str = ""
    public_url: str = ""
    domestic_number: str = "+78002345555"
    international_number: str = "+74952321000"
    # More identities of each line: Twilio numbers the Russian numbers are forwarded to,
    # sip: URIs of a SIP trunk (IVR_DOMESTIC_NUMBERS / IVR_INTERNATIONAL_NUMBERS).
    domestic_numbers: tuple[str, ...] = ()
    international_numbers: tuple[str, ...] = ()
    now: datetime | None = None
    opens: time = time(8, 0)
    closes: time = time(20, 0)
    holidays: frozenset[date] = frozenset()
    resolution_hours: Mapping[str, int] = field(
        default_factory=lambda: dict(DEFAULT_RESOLUTION_HOURS)
    )
    busy_timeout_ms: int = 5000
    dial_timeout_seconds: int = 25
    prompts_dir: str = ""
    max_request_bytes: int = 64 * 1024
    secret_key: str = ""
    allow_simulated_time: bool = False
    vosk_models: Mapping[str, str] = field(default_factory=dict)
    speech_workers: int = 2
    recording_hosts: tuple[str, ...] = ("api.twilio.com",)
    recordings_dir: str = "instance/recordings"
    recording_retention_days: int = 90
    delete_twilio_recordings: bool = False
    max_recording_bytes: int = 10_000_000
    session_idle_minutes: int = 60
    metrics_token: str = ""
    # Twilio's REST API (the stand-in's in tests): operator legs, callbacks, SMS.
    twilio_api_url: str = "https://api.twilio.com"
    queue_max_wait_seconds: int = 300  # then a queued caller is offered a callback
    sms_from: str = ""  # a number or Messaging Service SID (MG...); empty: no SMS offered
    # How often the dispatcher sweeps (seconds); 0: no background thread, every trigger
    # dispatches at once in the thread that fires it (tests).
    dispatch_interval_seconds: float = 2.0
    reconcile_after_minutes: int = 10  # a call with no final status this long: ask the API
    # "stream" (Media Streams + live recogniser), "record" (<Record> after the prompt), or
    # "" = stream when a model (or vosk-server) is configured (IVR_SPEECH_MODE).
    speech_mode: str = ""
    vosk_server_urls: tuple[str, ...] = ()
    media_stream_port: int = 8082
    # How much faster than real time a Media Streams client may send audio (beyond a 2 s
    # burst) before it counts as a flood; Twilio sends as spoken (1). The emulator's fast
    # runs stream at 1/time_scale (IVR_MEDIA_MAX_SPEEDUP).
    media_max_speedup: float = 1.0

    @property
    def opening_hours(self) -> OpeningHours:
        """The opening hours as the hours module wants them."""
        return OpeningHours(opens=self.opens, closes=self.closes, holidays=self.holidays)

    @property
    def line_numbers(self) -> dict[str, tuple[str, ...]]:
        """Every `To` each line answers on: the main number first, then its other identities."""
        return {
            "domestic": (self.domestic_number, *self.domestic_numbers),
            "international": (self.international_number, *self.international_numbers),
        }

    def with_overrides(self, overrides: Mapping[str, object]) -> Settings:
        """Return a copy with the given fields replaced (unknown names are an error)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **overrides)


def _parse_clock_time(name: str, text: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{name} must be a time like 08:00, got {text!r}") from None


def _parse_holidays(text: str) -> frozenset[date]:
    days = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            days.add(date.fromisoformat(part))
        except ValueError:
            raise ConfigError(
                f"IVR_HOLIDAYS must list dates like 2027-01-01, got {part!r}"
            ) from None
    return frozenset(days)


def _parse_resolution_hours(text: str) -> dict[str, int]:
    hours = dict(DEFAULT_RESOLUTION_HOURS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        category, _, value = part.partition("=")
        category = category.strip()
        if category not in CATEGORIES or not value.strip().isdigit():
            raise ConfigError(
                f"IVR_RESOLUTION_HOURS wants category=hours with categories "
                f"{', '.join(CATEGORIES)}; got {part!r}"
            )
        hours[category] = int(value)
    return hours


NUMBER_IDENTITY = re.compile(r"^(\+[1-9][0-9]{6,14}|sip:[^\s,@]+@[^\s,]+)$")


def _parse_numbers(name: str, text: str) -> tuple[str, ...]:
    """A comma-separated list of E.164 numbers and sip: URIs."""
    numbers = tuple(part.strip() for part in text.split(",") if part.strip())
    for number in numbers:
        if not NUMBER_IDENTITY.match(number):
            raise ConfigError(
                f"{name}: {number!r} is neither an E.164 number (+78002345555) nor a sip: URI"
            )
    return numbers


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {text!r}") from None


def _parse_recording_hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    for host in hosts:
        if any(mark in host for mark in ("/", "@", "?", "#", " ")):
            raise ConfigError(
                f"IVR_RECORDING_HOSTS wants hosts like api.twilio.com or 127.0.0.1:8080, "
                f"got {host!r}"
            )
    if not hosts:
        raise ConfigError("IVR_RECORDING_HOSTS names no host")
    return hosts


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read IVR_* settings from the environment."""
    env = os.environ if environ is None else environ
    settings = Settings()
    values: dict[str, object] = {}
    plain = {
        "IVR_DB": "db_path",
        "IVR_TWILIO_ACCOUNT_SID": "account_sid",
        "IVR_TWILIO_AUTH_TOKEN": "auth_token",
        "IVR_PUBLIC_URL": "public_url",
        "IVR_DOMESTIC_NUMBER": "domestic_number",
        "IVR_INTERNATIONAL_NUMBER": "international_number",
        "IVR_PROMPTS_DIR": "prompts_dir",
        "IVR_SECRET_KEY": "secret_key",
        "IVR_RECORDINGS_DIR": "recordings_dir",
        "IVR_METRICS_TOKEN": "metrics_token",
        "IVR_TWILIO_API_URL": "twilio_api_url",
        "IVR_SMS_FROM": "sms_from",
    }
    for variable, name in plain.items():
        if env.get(variable):
            values[name] = env[variable].strip()
    models = {
        language: env[f"IVR_VOSK_MODEL_{language.upper()}"].strip()
        for language in Language
        if env.get(f"IVR_VOSK_MODEL_{language.upper()}", "").strip()
    }
    if models:
        values["vosk_models"] = models
    if env.get("IVR_ALLOW_SIMULATED_TIME"):
        values["allow_simulated_time"] = env["IVR_ALLOW_SIMULATED_TIME"].strip().lower() in (
            "1",
            "true",
            "yes",
        )
    if env.get("IVR_DELETE_TWILIO_RECORDINGS"):
        values["delete_twilio_recordings"] = env[
            "IVR_DELETE_TWILIO_RECORDINGS"
        ].strip().lower() in ("1", "true", "yes")
    for variable, name in (
        ("IVR_DOMESTIC_NUMBERS", "domestic_numbers"),
        ("IVR_INTERNATIONAL_NUMBERS", "international_numbers"),
    ):
        if env.get(variable, "").strip():
            values[name] = _parse_numbers(variable, env[variable])
    if env.get("IVR_SPEECH_MODE", "").strip():
        mode = env["IVR_SPEECH_MODE"].strip().lower()
        if mode not in ("stream", "record"):
            raise ConfigError(f"IVR_SPEECH_MODE must be stream or record, got {mode!r}")
        values["speech_mode"] = mode
    if env.get("IVR_MEDIA_MAX_SPEEDUP", "").strip():
        try:
            values["media_max_speedup"] = float(env["IVR_MEDIA_MAX_SPEEDUP"])
        except ValueError:
            raise ConfigError("IVR_MEDIA_MAX_SPEEDUP must be a number, e.g. 1 or 4") from None
        if not 1 <= values["media_max_speedup"] <= 100:
            raise ConfigError("IVR_MEDIA_MAX_SPEEDUP must be between 1 and 100")
    if env.get("IVR_VOSK_SERVER_URLS", "").strip():
        urls = tuple(u.strip() for u in env["IVR_VOSK_SERVER_URLS"].split(",") if u.strip())
        for url in urls:
            if not url.startswith(("ws://", "wss://")):
                raise ConfigError(f"IVR_VOSK_SERVER_URLS wants ws:// or wss:// URLs, got {url!r}")
        values["vosk_server_urls"] = urls
    if env.get("IVR_RECORDING_HOSTS"):
        values["recording_hosts"] = _parse_recording_hosts(env["IVR_RECORDING_HOSTS"])
    if env.get("IVR_NOW"):
        try:
            values["now"] = parse_instant(env["IVR_NOW"])
        except ValueError as error:
            raise ConfigError(f"IVR_NOW: {error}") from None
    if env.get("IVR_OPENS"):
        values["opens"] = _parse_clock_time("IVR_OPENS", env["IVR_OPENS"])
    if env.get("IVR_CLOSES"):
        values["closes"] = _parse_clock_time("IVR_CLOSES", env["IVR_CLOSES"])
    if env.get("IVR_HOLIDAYS"):
        values["holidays"] = _parse_holidays(env["IVR_HOLIDAYS"])
    if env.get("IVR_RESOLUTION_HOURS"):
        values["resolution_hours"] = _parse_resolution_hours(env["IVR_RESOLUTION_HOURS"])
    for variable, name in {
        "IVR_BUSY_TIMEOUT_MS": "busy_timeout_ms",
        "IVR_SPEECH_WORKERS": "speech_workers",
        "IVR_DIAL_TIMEOUT": "dial_timeout_seconds",
        "IVR_MAX_REQUEST_BYTES": "max_request_bytes",
        "IVR_RECORDING_RETENTION_DAYS": "recording_retention_days",
        "IVR_MAX_RECORDING_BYTES": "max_recording_bytes",
        "IVR_SESSION_IDLE_MINUTES": "session_idle_minutes",
        "IVR_QUEUE_MAX_WAIT": "queue_max_wait_seconds",
        "IVR_RECONCILE_AFTER_MINUTES": "reconcile_after_minutes",
        "IVR_MEDIA_STREAM_PORT": "media_stream_port",
    }.items():
        if env.get(variable):
            values[name] = _parse_int(variable, env[variable])
    for variable, name in (
        ("IVR_RECORDING_RETENTION_DAYS", "recording_retention_days"),
        ("IVR_MAX_RECORDING_BYTES", "max_recording_bytes"),
        ("IVR_SESSION_IDLE_MINUTES", "session_idle_minutes"),
        ("IVR_QUEUE_MAX_WAIT", "queue_max_wait_seconds"),
        ("IVR_RECONCILE_AFTER_MINUTES", "reconcile_after_minutes"),
    ):
        if isinstance(value := values.get(name), int) and value < 1:
            raise ConfigError(f"{variable} must be at least 1, got {value}")
    if env.get("IVR_DISPATCH_INTERVAL"):
        try:
            values["dispatch_interval_seconds"] = float(env["IVR_DISPATCH_INTERVAL"])
        except ValueError:
            raise ConfigError("IVR_DISPATCH_INTERVAL must be a number of seconds") from None
    url = str(values.get("twilio_api_url", settings.twilio_api_url))
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"IVR_TWILIO_API_URL must be an http(s) URL, got {url!r}")
    sms_from = str(values.get("sms_from", ""))
    if sms_from and not (
        NUMBER_IDENTITY.match(sms_from) or re.match(r"^MG[0-9a-f]{32}$", sms_from)
    ):
        raise ConfigError(
            f"IVR_SMS_FROM must be an E.164 number or a Messaging Service SID (MG...), "
            f"got {sms_from!r}"
        )
    return settings.with_overrides(values)


def default_prompts_dir() -> Path:
    """Where the shipped prompts live (the repository's prompts/ folder)."""
    return Path(__file__).resolve().parent.parent / "prompts"

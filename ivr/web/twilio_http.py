"""The HTTP side every Twilio webhook shares: signature check, parsing, exactly-once store.

`webhook_blueprint` makes a blueprint under /twilio whose every request is refused unless
Twilio signed it, counted for /metrics, and answered safely when something unexpected
fails. The field readers refuse (400) what Twilio would never send. `handle` runs one
delivery exactly once: its answer is stored under (CallSid, kind, seq) and a retry of the
same delivery gets the stored TwiML back without touching anything else; each delivery
runs in one `BEGIN IMMEDIATE` transaction, so a crash leaves either all of it or none.

Every TwiML answer goes through `twiml` (called as `twilio_http.twiml`, so that the tests
can check each document the service sends).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, request
from twilio.request_validator import RequestValidator
from werkzeug.exceptions import HTTPException

from ivr import db as database
from ivr.calls import Refused, UnknownCall, is_ascii_number, queue_name
from ivr.db import calls as call_store
from ivr.dispatch import Dispatcher
from ivr.hours import parse_instant
from ivr.twiml import render_apology
from ivr.vocabulary import CALL_STATUSES, DEFAULT_LANGUAGE
from ivr.web.context import desk, settings, webhook_db

URL_PREFIX = "/twilio"
log = logging.getLogger("ivr.voice")

# \Z, not $: "$" also matches before a trailing newline ("CA...\n" is not a CallSid).
CALL_SID_PATTERN = re.compile(r"^CA[0-9a-fA-F]{32}\Z")
RECORDING_SID_PATTERN = re.compile(r"^RE[0-9a-fA-F]{32}\Z")
DIGITS_PATTERN = re.compile(r"^[0-9*#]{0,64}\Z")
MAX_FIELD_LENGTH = 256


def twiml(body: str) -> Response:
    """A TwiML answer (every one the service sends goes through here)."""
    return Response(body, mimetype="application/xml")


def webhook_blueprint(name: str, import_name: str, caller_endpoints: Collection[str] = ()):
    """A blueprint under /twilio: signed requests only, counted, failures answered safely.

    A failure of one of `caller_endpoints` (their answer is TwiML for the caller) is
    answered with the apology; any other (a notification) with 503.
    """
    bp = Blueprint(name, import_name, url_prefix=URL_PREFIX)
    bp.before_request(check_signature)
    bp.after_request(count_webhook)
    bp.after_request(wake_dispatcher)

    @bp.errorhandler(Exception)
    def answer_safely(error: Exception):
        """Anything unexpected (database locked, disk full...): log it, never strand the caller."""
        if isinstance(error, HTTPException):
            return error
        call_sid = request.form.get("CallSid", "")[:64]
        log.exception(
            "webhook failed; answering with the safe fallback",
            extra={"call_sid": call_sid, "path": request.path, "error_type": type(error).__name__},
        )
        current_app.extensions["ivr.metrics"].count_error(_endpoint_kind())
        if request.endpoint not in caller_endpoints:
            return Response(status=503)
        return twiml(apology(request.args.get("lang", DEFAULT_LANGUAGE), call_sid))

    return bp


def _endpoint_kind() -> str:
    """The webhook's name without its blueprint's ("incoming_call"), as /metrics counts it."""
    return (request.endpoint or "").removeprefix(f"{request.blueprint}.")


# Checks before anything is read --------------------------------------------------------


def _signed_url() -> str:
    """The URL Twilio signed: the public URL when we sit behind a proxy, else what we saw."""
    query = request.query_string.decode("latin-1")  # exactly as sent, not re-encoded
    suffix = request.path + (f"?{query}" if query else "")
    public = settings().public_url
    # scheme://host + the mount point, as request.root_url has it, without its IRI pass.
    base = public.rstrip("/") if public else f"{request.scheme}://{request.host}{request.root_path}"
    return base + suffix


def check_signature() -> None:
    """Refuse anything not signed with our auth token: 403, nothing read or written."""
    g.webhook_started = time.perf_counter()
    if (request.content_length or 0) > settings().max_request_bytes:
        abort(413)  # refused before the body is read
    token = settings().auth_token
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        log.warning(
            "webhook refused: %s",
            "no auth token set" if not token else "no signature",
            extra={"path": request.path},
        )
        abort(403)
    try:
        validator, url = RequestValidator(token), _signed_url()
        # The URL as Twilio signed it matches at the first try; only a miss pays for the
        # validator's port variants (it computes up to three signatures).
        expected = validator.compute_signature(url, request.form).encode()
        valid = hmac.compare_digest(
            expected, signature.encode("utf-8", "surrogateescape")
        ) or validator.validate(url, request.form, signature)
    except ValueError:  # a Host header with a bad port: not a URL Twilio could have signed
        valid = False
    if not valid:
        log.warning("webhook refused: bad signature", extra={"path": request.path})
        abort(403)


def count_webhook(response: Response) -> Response:
    """Count every answered webhook and its latency (for /metrics)."""
    started = g.get("webhook_started")
    if started is not None:
        kind = _endpoint_kind() if request.endpoint else "unknown"
        current_app.extensions["ivr.metrics"].observe_webhook(
            kind, response.status_code, time.perf_counter() - started
        )
    return response


def wake_dispatcher(response: Response) -> Response:
    """After the delivery committed: a caller queued, a leg ended, an SMS waits -> dispatch."""
    if g.get("wake_dispatcher") and response.status_code < 400:
        try:
            dispatcher().wake()
        except Exception:  # noqa: BLE001 - the caller's answer is already decided; the sweep retries
            log.exception("waking the dispatcher failed; the sweep will pick it up")
    return response


def dispatcher() -> Dispatcher:
    """The app's dispatcher (ivr.dispatch)."""
    return current_app.extensions["ivr.dispatcher"]


def apology(language: str, call_sid: str = "") -> str:
    """Apologise and queue; with a CallSid, in the caller's own queue, which the wait URL
    puts on the dispatcher's list (nothing of the failed request was written)."""
    catalogue = desk().prompts
    prompts = catalogue.get(language, catalogue[DEFAULT_LANGUAGE])
    if CALL_SID_PATTERN.match(call_sid):
        wait_url = f"{public_prefix()}{URL_PREFIX}/queue/wait?lang={prompts.language}"
        return render_apology(prompts, queue_name(call_sid), wait_url)
    return render_apology(prompts, f"support-{prompts.language}")


# Parsing -------------------------------------------------------------------------------


def field(name: str, required: bool = False) -> str:
    """A form field, at most MAX_FIELD_LENGTH characters (400 otherwise, or when missing)."""
    value = request.form.get(name, "")
    if len(value) > MAX_FIELD_LENGTH:
        abort(400, description=f"{name} is too long")
    if required and not value:
        abort(400, description=f"{name} is missing")
    return value


def documented(name: str, allowed: tuple[str, ...]) -> str:
    """A field Twilio fills from a documented set: anything else is refused (400).

    Twilio's signature runs names and values together, so text can be moved between
    adjacent fields of a captured request without breaking it; a value outside the set is
    such a forgery (or a Twilio change we must hear about), never something to record.
    """
    value = field(name)
    if value not in allowed:
        abort(400, description=f"{name} is not one of Twilio's documented values")
    return value


def parse_call_sid() -> str:
    """The CallSid field: CA and 32 hex digits, or 400."""
    call_sid = field("CallSid", required=True)
    if not CALL_SID_PATTERN.match(call_sid):
        abort(400, description="CallSid is malformed")
    return call_sid


def parse_seq() -> int:
    """The step counter our own webhook URL carries (`?seq=`), or 400."""
    text = request.args.get("seq", "")
    if not is_ascii_number(text) or len(text) > 9:
        abort(400, description="seq is missing or malformed")
    return int(text)


def parse_recording_sid(required: bool) -> str:
    """The RecordingSid field: RE and 32 hex digits (or empty when not required), or 400."""
    sid = field("RecordingSid")
    if (sid or required) and not RECORDING_SID_PATTERN.match(sid):
        abort(400, description="RecordingSid is malformed")
    return sid


def parse_keys() -> tuple[str, dict[str, Any]]:
    """The caller's keys as the flow sees them; anything that is not a key is a wrong key."""
    raw = request.form.get("Digits", "")
    if DIGITS_PATTERN.match(raw):
        return raw, {"digits": raw}
    return "?", {"digits": raw[:64], "invalid": True}


def seq_of(url: str) -> int | None:
    """The seq of one of our own webhook URLs (0 for the call's first, /twilio/voice)."""
    parts = urllib.parse.urlsplit(url)
    base = public_prefix() + URL_PREFIX
    if parts.path == f"{base}/voice":
        return 0
    if not parts.path.startswith(base + "/"):
        return None
    seq = urllib.parse.parse_qs(parts.query).get("seq", [""])[0]
    return int(seq) if is_ascii_number(seq) and len(seq) <= 9 else None


def parse_simulated_now() -> datetime | None:
    """The instant a simulated call is placed at (`?simulated_now=` on the signed URL).

    Honoured only when IVR_ALLOW_SIMULATED_TIME is on (emulator runs); never in production.
    """
    text = request.args.get("simulated_now", "")
    if not text or not settings().allow_simulated_time:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        abort(400, description="simulated_now is not an ISO-8601 instant")


# Delivering once, answering TwiML ------------------------------------------------------


def public_prefix() -> str:
    """The path IVR_PUBLIC_URL puts before /twilio (e.g. "/ivr"), or ""."""
    return urllib.parse.urlsplit(settings().public_url).path.rstrip("/")


def handle(
    kind: str,
    call_sid: str,
    seq: int | str | Callable[[Any], int | str],
    work: Callable[[Any], str],
) -> Response:
    """Run one delivery exactly once: a retry of the same delivery gets the stored answer.

    The key is (CallSid, kind, seq): seq comes from the signed URL, or (a callable) from the
    database inside the transaction; never from a field that could be shifted.
    """
    started = time.perf_counter()
    db = webhook_db()
    with database.write_transaction(db):
        if callable(seq):
            seq = seq(db)
        key = f"{call_sid}:{kind}:{seq}"
        answer = call_store.stored_response(db, key)
        if answer is not None:
            log.info(
                "duplicate delivery answered from store",
                extra={"call_sid": call_sid, "kind": kind, "seq": seq},
            )
            return twiml(answer)
        try:
            answer = work(db)
        except UnknownCall:
            abort(404, description="unknown call")
        except Refused as refused:
            abort(400, description=str(refused))
        call_store.store_response(db, key, call_sid, answer, desk().clock.now())
    log.info(
        "webhook handled",
        extra={
            "call_sid": call_sid,
            "kind": kind,
            "seq": seq,
            "step": g.get("call_step"),
            **g.get("log_extra", {}),
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "idempotency_token": request.headers.get("I-Twilio-Idempotency-Token", ""),
        },
    )
    return twiml(answer)


def status_seq(status: str) -> int:
    """Status callbacks are deduplicated per status (a retry of 'completed' is one record)."""
    return CALL_STATUSES.index(status) + 1000

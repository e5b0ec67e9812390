"""Twilio webhooks: check the signature, parse the request, deliver it once, answer TwiML.

Every URL Twilio is sent to carries the call's step counter (`seq`). A delivery is handled
once: its answer is stored under (CallSid, kind, seq) and a retry of the same delivery gets
the stored TwiML back without touching anything else. Each delivery runs in one
`BEGIN IMMEDIATE` transaction, so a crash leaves either all of it or none of it. What a
webhook does to the call is the call service's (`ivr.calls`); this module is HTTP only.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, request
from twilio.request_validator import RequestValidator
from werkzeug.exceptions import HTTPException

from ivr import db as database
from ivr import flow
from ivr.calls import (
    FINAL_CALL_STATUSES,
    Answer,
    CallContext,
    Refused,
    UnknownCall,
    is_ascii_number,
    queue_name,
)
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import core
from ivr.db import tickets as ticket_store
from ivr.dispatch import LEG_SID_PATTERN, Dispatcher, estimate_wait_minutes, line_number
from ivr.dispatch import SPEED_OF_ANSWER_WINDOW as ASA_WINDOW
from ivr.hours import parse_instant
from ivr.operators import operator_from_row
from ivr.twiml import (
    Links,
    render,
    render_apology,
    render_operator_callback,
    render_operator_goodbye,
    render_operator_queue,
    render_queue_leave,
    render_queue_wait,
)
from ivr.vocabulary import (
    CALL_STATUSES,
    DEFAULT_LANGUAGE,
    DIAL_CALL_STATUSES,
    MESSAGE_STATUSES,
    QUEUE_RESULTS,
    RECORDING_STATUSES,
    EventKind,
    LegPurpose,
    Presence,
    QueueState,
    RecordingPurpose,
    Step,
    values,
)
from ivr.web.context import desk, get_db, settings
from ivr.web.i18n import LABELS

bp = Blueprint("voice", __name__, url_prefix="/twilio")
log = logging.getLogger("ivr.voice")

# \Z, not $: "$" also matches before a trailing newline ("CA...\n" is not a CallSid).
CALL_SID_PATTERN = re.compile(r"^CA[0-9a-fA-F]{32}\Z")
LEG_SID = re.compile(rf"^{LEG_SID_PATTERN}\Z")
MESSAGE_SID_PATTERN = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}\Z")
CUSTOMER_NUMBER = re.compile(r"^\+?[0-9]{3,16}\Z")
WHISPER_DESCRIPTION_WORDS = 12
RECORDING_SID_PATTERN = re.compile(r"^RE[0-9a-fA-F]{32}\Z")
DIGITS_PATTERN = re.compile(r"^[0-9*#]{0,64}\Z")
MAX_FIELD_LENGTH = 256

# Webhooks whose answer is TwiML for the caller (the others are notifications).
CALL_FLOW_ENDPOINTS = (
    "voice.incoming_call",
    "voice.gather",
    "voice.dial_ended",
    "voice.queue_ended",
    "voice.recorded",
    "voice.recognition_result",
    "voice.spoken",
)


def _twiml(body: str) -> Response:
    return Response(body, mimetype="application/xml")


# Checks before anything is read --------------------------------------------------------


def _signed_url() -> str:
    """The URL Twilio signed: the public URL when we sit behind a proxy, else what we saw."""
    query = request.query_string.decode("latin-1")  # exactly as sent, not re-encoded
    suffix = request.path + (f"?{query}" if query else "")
    public = settings().public_url
    # scheme://host + the mount point, as request.root_url has it, without its IRI pass.
    base = public.rstrip("/") if public else f"{request.scheme}://{request.host}{request.root_path}"
    return base + suffix


@bp.before_request
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


@bp.after_request
def count_webhook(response: Response) -> Response:
    """Count every answered webhook and its latency (for /metrics)."""
    started = g.get("webhook_started")
    if started is not None:
        kind = (request.endpoint or "unknown").removeprefix("voice.")
        current_app.extensions["ivr.metrics"].observe_webhook(
            kind, response.status_code, time.perf_counter() - started
        )
    return response


@bp.after_request
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
    current_app.extensions["ivr.metrics"].count_error(
        (request.endpoint or "").removeprefix("voice.")
    )
    if request.endpoint not in CALL_FLOW_ENDPOINTS:
        return Response(status=503)
    return _twiml(_apology(request.args.get("lang", DEFAULT_LANGUAGE), call_sid))


def _apology(language: str, call_sid: str = "") -> str:
    """Apologise and queue; with a CallSid, in the caller's own queue, which the wait URL
    puts on the dispatcher's list (nothing of the failed request was written)."""
    catalogue = desk().prompts
    prompts = catalogue.get(language, catalogue[DEFAULT_LANGUAGE])
    if CALL_SID_PATTERN.match(call_sid):
        wait_url = f"{public_prefix()}{bp.url_prefix}/queue/wait?lang={prompts.language}"
        return render_apology(prompts, queue_name(call_sid), wait_url)
    return render_apology(prompts, f"support-{prompts.language}")


# Parsing -------------------------------------------------------------------------------


def _field(name: str, required: bool = False) -> str:
    value = request.form.get(name, "")
    if len(value) > MAX_FIELD_LENGTH:
        abort(400, description=f"{name} is too long")
    if required and not value:
        abort(400, description=f"{name} is missing")
    return value


def _documented(name: str, allowed: tuple[str, ...]) -> str:
    """A field Twilio fills from a documented set: anything else is refused (400).

    Twilio's signature runs names and values together, so text can be moved between
    adjacent fields of a captured request without breaking it; a value outside the set is
    such a forgery (or a Twilio change we must hear about), never something to record.
    """
    value = _field(name)
    if value not in allowed:
        abort(400, description=f"{name} is not one of Twilio's documented values")
    return value


def _call_sid() -> str:
    call_sid = _field("CallSid", required=True)
    if not CALL_SID_PATTERN.match(call_sid):
        abort(400, description="CallSid is malformed")
    return call_sid


def _seq() -> int:
    text = request.args.get("seq", "")
    if not is_ascii_number(text) or len(text) > 9:
        abort(400, description="seq is missing or malformed")
    return int(text)


def _recording_sid(required: bool) -> str:
    sid = _field("RecordingSid")
    if (sid or required) and not RECORDING_SID_PATTERN.match(sid):
        abort(400, description="RecordingSid is malformed")
    return sid


def _keys() -> tuple[str, dict[str, Any]]:
    """The caller's keys as the flow sees them; anything that is not a key is a wrong key."""
    raw = request.form.get("Digits", "")
    if DIGITS_PATTERN.match(raw):
        return raw, {"digits": raw}
    return "?", {"digits": raw[:64], "invalid": True}


def _seq_of(url: str) -> int | None:
    """The seq of one of our own webhook URLs (0 for the call's first, /twilio/voice)."""
    parts = urllib.parse.urlsplit(url)
    base = public_prefix() + bp.url_prefix
    if parts.path == f"{base}/voice":
        return 0
    if not parts.path.startswith(base + "/"):
        return None
    seq = urllib.parse.parse_qs(parts.query).get("seq", [""])[0]
    return int(seq) if is_ascii_number(seq) and len(seq) <= 9 else None


def _simulated_now() -> datetime | None:
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


def stream_url() -> str:
    """Where Twilio opens the Media Stream: wss:// behind an https IVR_PUBLIC_URL (the proxy
    maps it to IVR_MEDIA_STREAM_PORT), else ws:// straight to the media socket's port."""
    live = current_app.extensions.get("ivr.live")
    if live is None or live.stream_port is None:
        return ""
    public = urllib.parse.urlsplit(settings().public_url)
    if public.scheme == "https":
        return f"wss://{public.netloc}{public.path.rstrip('/')}{bp.url_prefix}/media"
    host = (public.hostname if public.scheme else None) or request.host.rsplit(":", 1)[0]
    return f"ws://{host}:{live.stream_port}{bp.url_prefix}/media"


def _stream_links(answer: Answer) -> dict[str, Any]:
    if not answer.turn.listen:
        return {}
    live = current_app.extensions.get("ivr.live")
    url = stream_url()
    if live is None or not url:
        return {}
    call_sid = request.form.get("CallSid", "")
    return {
        "stream_url": url,
        "stream_name": f"{answer.turn.listen}-{answer.seq}",
        "stream_parameters": (
            ("seq", str(answer.seq)),
            ("token", live.token(call_sid, answer.seq)),
        ),
    }


def _links(answer: Answer) -> Links:
    step, language, seq = answer.state.step, answer.state.language, answer.seq
    purpose = answer.turn.record.purpose if answer.turn.record else ""
    # Twilio resolves these against the host: behind IVR_PUBLIC_URL's path they carry it.
    base = public_prefix() + bp.url_prefix
    return Links(
        **_stream_links(answer),
        record_action=f"{base}/recorded/{step}?seq={seq}",
        recording_status=f"{base}/recording-status?purpose={purpose}&lang={language}",
        poll=f"{base}/result/{step}?seq={seq}",
        action=f"{base}/gather/{step}?seq={seq}",
        dial_action=f"{base}/dial?seq={seq}",
        enqueue_action=f"{base}/queue?seq={seq}",
        wait_url=f"{base}/queue/wait?lang={language}",
        dial_timeout=settings().dial_timeout_seconds,
    )


def _render(answer: Answer) -> str:
    g.call_step = answer.turn.name  # for the "webhook handled" log line
    if answer.turn.end == "enqueue" or answer.sms_requested:
        g.wake_dispatcher = True
    return render(answer.turn, desk().prompts, answer.state.language, _links(answer))


def _handle(
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
    db = get_db()
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
            return _twiml(answer)
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
    return _twiml(answer)


def _continue_call(
    call_sid: str,
    seq: int,
    kind: str,
    make_event: Callable[[CallContext], flow.Event],
    detail: dict[str, Any],
    expected_step: str | None = None,
) -> Response:
    def work(db) -> str:
        return _render(
            desk().continue_call(db, call_sid, seq, kind, make_event, detail, expected_step)
        )

    return _handle(kind, call_sid, seq, work)


# The webhooks --------------------------------------------------------------------------


@bp.post("/voice")
def incoming_call() -> Response:
    """A new call on either number."""
    call_sid = _call_sid()
    simulated_now = _simulated_now()

    def work(db) -> str:
        from_number = _field("From")
        answer = desk().start_call(
            db,
            call_sid,
            to_number=_field("To"),
            from_number=from_number,
            account_sid=_field("AccountSid"),
            status=_field("CallStatus"),
            simulated_now=simulated_now,
        )
        # One log line per webhook: a new call's says where it came from (number masked).
        g.log_extra = {"line": answer.state.line, "from_number": from_number}
        g.log_extra["open"] = answer.state.is_open
        return _render(answer)

    return _handle("voice", call_sid, 0, work)


@bp.post("/gather/<step>")
def gather(step: str) -> Response:
    """The caller pressed keys (or the <Gather> timed out and we were redirected here)."""
    call_sid, seq = _call_sid(), _seq()
    digits, detail = _keys()
    return _continue_call(
        call_sid, seq, "gather", lambda _ctx: flow.Keys(digits), detail, expected_step=step
    )


@bp.post("/dial")
def dial_ended() -> Response:
    """Twilio reports how the <Dial> to the operator ended."""
    call_sid, seq = _call_sid(), _seq()
    status = _documented("DialCallStatus", DIAL_CALL_STATUSES)
    detail = {"dial_status": status, "dial_duration": _field("DialCallDuration")}
    return _continue_call(call_sid, seq, "dial", lambda _ctx: flow.DialEnded(status), detail)


@bp.post("/queue")
def queue_ended() -> Response:
    """Twilio reports how the caller left the queue."""
    call_sid, seq = _call_sid(), _seq()
    result = _documented("QueueResult", QUEUE_RESULTS)
    detail = {"queue_result": result, "queue_time": _field("QueueTime")}
    return _continue_call(call_sid, seq, "queue", lambda _ctx: flow.QueueEnded(result), detail)


@bp.post("/recorded/<step>")
def recorded(step: str) -> Response:
    """The <Record> action (with a recording), or the redirect after an empty one.

    Twilio's <Record> page: a key of finishOnKey ends the recording at once and is sent as
    `Digits` ("hangup" when the caller hung up); a silent recording has RecordingDuration
    0. Either may mean nothing was said: then the flow moves on at once, with no wait for
    recognition (flow.recording_heard).
    """
    call_sid, seq = _call_sid(), _seq()
    recording_sid, url = _recording_sid(required=False), _field("RecordingUrl")
    duration, digits = _field("RecordingDuration"), _field("Digits")

    def make_event(context: CallContext) -> flow.Event:
        if not (recording_sid and url) or context.recording_of_another_call(recording_sid):
            return flow.NothingRecorded()
        record = flow.pending_record(context.state)
        if record is None:
            return flow.Recorded(recording_sid)
        if not flow.recording_heard(record.purpose, duration, digits):
            return flow.NothingRecorded()
        context.note_recording(recording_sid, url, record.purpose, duration)
        return flow.Recorded(recording_sid)

    detail: dict[str, Any] = (
        {"recording_sid": recording_sid, "duration": duration}
        if recording_sid
        else {"recording": "empty"}
    )
    if digits:
        detail["ended_by"] = digits[:16]
    return _continue_call(call_sid, seq, "recorded", make_event, detail, expected_step=step)


@bp.post("/recording-status")
def recording_status() -> Response:
    """Twilio's recordingStatusCallback: a finished recording is fetched and recognised."""
    call_sid = _call_sid()
    recording_sid, url = _recording_sid(required=True), _field("RecordingUrl")
    status = _documented("RecordingStatus", RECORDING_STATUSES)
    purpose = request.args.get("purpose", "")
    if purpose not in values(RecordingPurpose):
        abort(400, description="unknown recording purpose")
    duration = _field("RecordingDuration")
    claimed: dict[str, str] = {}

    def work(db) -> str:
        claim = desk().recording_status(db, call_sid, recording_sid, url, status, purpose, duration)
        claimed.update(claim or {})
        return ""

    _handle("recording", call_sid, f"{recording_sid}:{status}", work)
    if claimed:
        # After the commit: the job reads what this delivery wrote.
        current_app.extensions["ivr.speech"].start(
            call_sid, recording_sid, claimed["url"], purpose, claimed["language"]
        )
    return Response(status=204)


@bp.post("/result/<step>")
def recognition_result(step: str) -> Response:
    """The waiting caller's poll: is the spoken number recognised yet?"""
    call_sid, seq = _call_sid(), _seq()
    return _continue_call(
        call_sid,
        seq,
        "result",
        lambda context: context.speech_result(),
        {"poll": True},
        expected_step=step,
    )


@bp.post("/spoken/<step>")
def spoken(step: str) -> Response:
    """A REST call update moved the call here: the streamed utterance has its result."""
    call_sid, seq = _call_sid(), _seq()
    return _continue_call(
        call_sid,
        seq,
        "spoken",
        lambda context: context.speech_result(),
        {"spoken": True},
        expected_step=step,
    )


@bp.post("/queue/wait")
def queue_wait() -> Response:
    """Twilio's wait URL: position and estimated wait; after the longest wait, a callback offer.

    Twilio requests it when the caller enters the queue and again whenever its TwiML ends.
    Every caller has a queue of their own, so Twilio's QueuePosition is always 1: the
    position is counted here, among the callers of the language, oldest first. Times are
    real elapsed time (the wall clock), also when IVR_NOW fixes the business clock.
    """
    catalogue = desk().prompts
    prompts = catalogue.get(request.args.get("lang", ""), catalogue[DEFAULT_LANGUAGE])
    call_sid = request.form.get("CallSid", "")
    if not CALL_SID_PATTERN.match(call_sid):
        abort(400, description="CallSid is malformed")
    db = get_db()
    entry = acd_store.get_entry(db, call_sid)
    if entry is None:
        entry = _register_stray_caller(db, call_sid, prompts.language)
    now = desk().wall_clock.now()
    position = acd_store.queue_position(db, call_sid) if entry else None
    if entry is None or position is None:
        return _twiml(render_queue_wait(prompts, None))
    waited = (now - parse_instant(entry["entered_at"])).total_seconds()
    longest = settings().queue_max_wait_seconds
    if waited >= longest and entry["ticket_number"]:
        offer = f"{public_prefix()}{bp.url_prefix}/queue/offer?lang={prompts.language}"
        return _twiml(render_queue_wait(prompts, position, None, offer_action=offer))
    speed = acd_store.average_speed_of_answer(db, now - ASA_WINDOW)
    minutes = estimate_wait_minutes(position, speed, _serving(db, entry["language"]), waited)
    # Say it again in about 30 s, or at the longest wait if that comes sooner.
    pause = int(min(30, max(1, longest - waited))) if waited < longest else 30
    return _twiml(render_queue_wait(prompts, position, minutes, pause_seconds=pause))


def _serving(db, language: str) -> int:
    """Available operators who speak the language (how many callers are answered at once)."""
    rows = db.execute(
        "SELECT * FROM operators WHERE active = 1 AND presence = ?", [Presence.AVAILABLE]
    )
    return sum(1 for row in rows if language in operator_from_row(dict(row)).languages)


def _register_stray_caller(db, call_sid: str, language: str):
    """A caller queued by the safe apology (their webhook failed): on the dispatcher's list."""
    with database.write_transaction(db):
        call = call_store.get_call(db, call_sid)
        if call is None or call["ended_at"]:
            return None
        acd_store.enter_queue(
            db,
            {
                "call_sid": call_sid,
                "queue_name": queue_name(call_sid),
                "language": call["language"] or language,
                "ticket_number": call["ticket_number"],
                "operator_id": call["operator_id"],
                "entered_at": core.timestamp(desk().wall_clock.now()),
            },
        )
    log.warning(
        "a caller queued by the safe apology is now dispatched", extra={"call_sid": call_sid}
    )
    g.wake_dispatcher = True
    return acd_store.get_entry(db, call_sid)


@bp.post("/queue/offer")
def queue_offer() -> Response:
    """The callback offer's <Gather>: 1 -> the ticket is marked for a callback and <Leave>
    (the <Enqueue> action then gets QueueResult=leave: "an operator will call you back")."""
    call_sid = _call_sid()
    wait_url = f"{public_prefix()}{bp.url_prefix}/queue/wait?lang={request.args.get('lang', '')}"
    digits, _detail = _keys()
    if digits != "1":
        return _twiml(render_queue_leave(wait_url, leave=False))
    db = get_db()
    with database.write_transaction(db):
        entry = acd_store.get_entry(db, call_sid)
        if entry is None:
            abort(404, description="not in the queue")
        now = desk().wall_clock.now()
        if acd_store.leave_queue(db, call_sid, QueueState.LEFT, now):
            if entry["ticket_number"]:
                acd_store.request_callback(db, entry["ticket_number"], now)
            call_store.add_event(
                db,
                call_sid,
                call_store.current_seq(db, call_sid),
                desk().clock.now(),
                EventKind.CALLBACK_REQUESTED,
                Step.QUEUE,
                {"ticket_number": entry["ticket_number"]},
            )
    return _twiml(render_queue_leave(wait_url, leave=True))


# Operators' legs (placed by the dispatcher through Twilio's REST API) ------------------


def _leg_sid(text: str) -> str:
    if not LEG_SID.match(text):
        abort(400, description="leg id is malformed")
    return text


def _leg_or_404(db, sid: str, call_sid: str) -> dict[str, Any]:
    leg = acd_store.get_leg(db, sid)
    if leg is None:
        raise UnknownCall(sid)
    if leg["call_sid"] and leg["call_sid"] != call_sid:
        raise Refused("the leg belongs to another call")
    return leg


def _whisper(db, ticket: dict[str, Any] | None) -> list[str]:
    """ "Обращение номер …, заказ …, тема …" and the description's first words, in Russian."""
    prompts = desk().prompts["ru"]
    if ticket is None:
        return []
    texts = [prompts.text("whisper", {"ticket": ticket["number"]})]
    if ticket["order_number"]:
        texts.append(prompts.text("whisper_order", {"digits": ticket["order_number"]}))
    topic = LABELS["ru"]["category"].get(ticket["category"], ticket["category"])
    texts.append(prompts.text("whisper_topic", {"topic": topic}))
    if ticket.get("description"):
        words = ticket["description"].split()[:WHISPER_DESCRIPTION_WORDS]
        texts.append(prompts.text("whisper_description", {"text": " ".join(words)}))
    return texts


@bp.post("/operator/<leg_sid>")
def operator_answered(leg_sid: str) -> Response:
    """The operator picked up: whisper the ticket, then take the caller out of their queue
    (or, for a callback, dial the customer from the line's number)."""
    leg_sid, call_sid = _leg_sid(leg_sid), _call_sid()
    prefix = public_prefix() + bp.url_prefix

    def work(db) -> str:
        leg = _leg_or_404(db, leg_sid, call_sid)
        dispatcher().leg_answered(db, leg, call_sid)
        prompts = desk().prompts["ru"]
        action = f"{prefix}/operator/{leg_sid}/dialed"
        ticket = ticket_store.get_ticket(db, leg["ticket_number"]) if leg["ticket_number"] else None
        if leg["purpose"] == LegPurpose.CALLBACK:
            customer = (ticket or {}).get("caller_number") or ""
            if ticket is None or not (
                CUSTOMER_NUMBER.match(customer) or customer.startswith("sip:")
            ):
                return render_operator_goodbye(prompts, "whisper_caller_gone")
            call = call_store.get_call(db, ticket["call_sid"]) if ticket["call_sid"] else None
            return render_operator_callback(
                prompts,
                [prompts.text("whisper_callback"), *_whisper(db, ticket)],
                customer,
                line_number(settings(), call),
                action,
                settings().dial_timeout_seconds,
            )
        entry = acd_store.get_entry(db, leg["caller_call_sid"] or "")
        if entry is None or entry["state"] != QueueState.WAITING:
            return render_operator_goodbye(prompts, "whisper_caller_gone")
        return render_operator_queue(prompts, _whisper(db, ticket), entry["queue_name"], action)

    return _handle("operator", call_sid, leg_sid, work)


@bp.post("/operator/<leg_sid>/dialed")
def operator_dialed(leg_sid: str) -> Response:
    """The operator's <Dial> ended (the caller's queue, or the customer's phone)."""
    leg_sid, call_sid = _leg_sid(leg_sid), _call_sid()
    status = _documented("DialCallStatus", DIAL_CALL_STATUSES)

    def work(db) -> str:
        leg = _leg_or_404(db, leg_sid, call_sid)
        if leg["purpose"] == LegPurpose.CALLBACK:
            dispatcher().callback_dialled(db, leg, status)
        return render_operator_goodbye(desk().prompts["ru"], None)

    return _handle("operator-dialed", call_sid, leg_sid, work)


@bp.post("/operator-status")
def operator_status() -> Response:
    """The operator leg's status callback: answered, or ended (free again: dispatch)."""
    call_sid = _call_sid()
    leg_sid = _leg_sid(request.args.get("leg", ""))
    status = _documented("CallStatus", CALL_STATUSES)

    def work(db) -> str:
        leg = _leg_or_404(db, leg_sid, call_sid)
        if dispatcher().leg_status(db, leg, call_sid, status):
            g.wake_dispatcher = True
        return ""

    _handle("operator-status", call_sid, f"{leg_sid}:{_status_seq(status)}", work)
    return Response(status=204)


@bp.post("/sms-status")
def sms_status() -> Response:
    """A ticket SMS's status callback: the delivery status goes on record."""
    message_sid = _field("MessageSid", required=True)
    if not MESSAGE_SID_PATTERN.match(message_sid):
        abort(400, description="MessageSid is malformed")
    status = _documented("MessageStatus", MESSAGE_STATUSES)
    db = get_db()
    with database.write_transaction(db):
        known = dispatcher().sms_status(db, message_sid, status)
    if not known:
        abort(404, description="unknown message")
    return Response(status=204)


@bp.post("/status")
def call_status() -> Response:
    """Twilio's status callback: record the call's status and duration, once per status."""
    call_sid = _call_sid()
    status = _documented("CallStatus", CALL_STATUSES)

    def work(db) -> str:
        desk().call_status(
            db,
            call_sid,
            status,
            _field("CallDuration"),
            to_number=_field("To"),
            from_number=_field("From"),
            account_sid=_field("AccountSid"),
        )
        return ""

    _handle("status", call_sid, _status_seq(status), work)
    live = current_app.extensions.get("ivr.live")
    if live is not None and status in FINAL_CALL_STATUSES:
        live.end_call(call_sid)  # a stream never outlives its call
    return Response(status=204)


def _status_seq(status: str) -> int:
    """Status callbacks are deduplicated per status (a retry of 'completed' is one record)."""
    return CALL_STATUSES.index(status) + 1000


@bp.post("/fallback")
def fallback() -> Response:
    """Twilio's fallback URL: something failed; apologise and still give ticket + operator."""
    call_sid = request.form.get("CallSid", "")
    try:
        if not CALL_SID_PATTERN.match(call_sid):
            raise LookupError("no usable CallSid")
        error_code, error_url = _field("ErrorCode"), _field("ErrorUrl")
        log.error(
            "Twilio used the fallback URL",
            extra={"call_sid": call_sid, "error_code": error_code, "error_url": error_url},
        )
        if not re.fullmatch(r"[0-9]{5}", error_code):
            abort(400, description="ErrorCode is not a Twilio error code")
        failed_seq = _seq_of(error_url)
        arrived: dict[str, int] = {}

        def delivery_key(db) -> str:
            # Keyed on the failed request (its seq, from our own URL in ErrorUrl) and the
            # error: one fallback per failed request, however late a replay comes. When
            # ErrorUrl is not ours, on where the call stood when this delivery came.
            if failed_seq is not None:
                return f"{error_code}:{failed_seq}"
            arrived["seq"] = call_store.current_seq(db, call_sid)
            return f"{error_code}:at{arrived['seq']}"

        def work(db) -> str:
            answer = desk().fallback(
                db,
                call_sid,
                error_code,
                error_url,
                to_number=_field("To"),
                from_number=_field("From"),
                account_sid=_field("AccountSid"),
            )
            body = _render(answer)
            if arrived and answer.seq != arrived["seq"]:
                # A replay arriving after this commit finds the call one step on: it gets
                # the same answer from there too, not a second fallback.
                key = f"{call_sid}:fallback:{error_code}:at{answer.seq}"
                call_store.store_response(db, key, call_sid, body, desk().clock.now())
            return body

        return _handle("fallback", call_sid, delivery_key, work)
    except Exception as error:  # noqa: BLE001 - the caller must still hear something sensible
        if not isinstance(error, LookupError | HTTPException):  # HTTPException: a bad field
            log.exception("fallback failed; queueing the caller", extra={"call_sid": call_sid})
        return _twiml(_apology(DEFAULT_LANGUAGE, call_sid))

"""The caller's webhooks: a new call, keys, dial and queue results, recordings, speech,
status callbacks and Twilio's fallback URL.

Each turns a Twilio request into an event for the call service (`ivr.calls`) and its
answer into TwiML with this call's webhook URLs. Every URL Twilio is sent to carries the
call's step counter (`seq`), the key of the exactly-once store; the signature check,
parsing and that store are `ivr.web.twilio_http`'s. Operators' legs, the queue's wait URL
and SMS status are `ivr.web.operator_hooks`'s.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from flask import Response, abort, current_app, g, request
from werkzeug.exceptions import HTTPException

from ivr import flow
from ivr.calls import FINAL_CALL_STATUSES, Answer, CallContext
from ivr.db import calls as call_store
from ivr.twiml import Links, render
from ivr.vocabulary import (
    CALL_STATUSES,
    DEFAULT_LANGUAGE,
    DIAL_CALL_STATUSES,
    QUEUE_RESULTS,
    RECORDING_STATUSES,
    RecordingPurpose,
    values,
)
from ivr.web import twilio_http
from ivr.web.context import desk, settings
from ivr.web.twilio_http import (
    CALL_SID_PATTERN,
    URL_PREFIX,
    documented,
    field,
    handle,
    log,
    parse_call_sid,
    parse_keys,
    parse_recording_sid,
    parse_seq,
    parse_simulated_now,
    public_prefix,
    seq_of,
    status_seq,
    webhook_blueprint,
)

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

bp = webhook_blueprint("voice", __name__, caller_endpoints=CALL_FLOW_ENDPOINTS)


# TwiML for the caller ------------------------------------------------------------------


def stream_url() -> str:
    """Where Twilio opens the Media Stream: wss:// behind an https IVR_PUBLIC_URL (the proxy
    maps it to IVR_MEDIA_STREAM_PORT), else ws:// straight to the media socket's port."""
    live = current_app.extensions.get("ivr.live")
    if live is None or live.stream_port is None:
        return ""
    public = urllib.parse.urlsplit(settings().public_url)
    if public.scheme == "https":
        return f"wss://{public.netloc}{public.path.rstrip('/')}{URL_PREFIX}/media"
    host = (public.hostname if public.scheme else None) or request.host.rsplit(":", 1)[0]
    return f"ws://{host}:{live.stream_port}{URL_PREFIX}/media"


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
    base = public_prefix() + URL_PREFIX
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

    return handle(kind, call_sid, seq, work)


# The webhooks --------------------------------------------------------------------------


@bp.post("/voice")
def incoming_call() -> Response:
    """A new call on either number."""
    call_sid = parse_call_sid()
    simulated_now = parse_simulated_now()

    def work(db) -> str:
        from_number = field("From")
        answer = desk().start_call(
            db,
            call_sid,
            to_number=field("To"),
            from_number=from_number,
            account_sid=field("AccountSid"),
            status=field("CallStatus"),
            simulated_now=simulated_now,
        )
        # One log line per webhook: a new call's says where it came from (number masked).
        g.log_extra = {"line": answer.state.line, "from_number": from_number}
        g.log_extra["open"] = answer.state.is_open
        return _render(answer)

    return handle("voice", call_sid, 0, work)


@bp.post("/gather/<step>")
def gather(step: str) -> Response:
    """The caller pressed keys (or the <Gather> timed out and we were redirected here)."""
    call_sid, seq = parse_call_sid(), parse_seq()
    digits, detail = parse_keys()
    return _continue_call(
        call_sid, seq, "gather", lambda _ctx: flow.Keys(digits), detail, expected_step=step
    )


@bp.post("/dial")
def dial_ended() -> Response:
    """Twilio reports how the <Dial> to the operator ended."""
    call_sid, seq = parse_call_sid(), parse_seq()
    status = documented("DialCallStatus", DIAL_CALL_STATUSES)
    detail = {"dial_status": status, "dial_duration": field("DialCallDuration")}
    return _continue_call(call_sid, seq, "dial", lambda _ctx: flow.DialEnded(status), detail)


@bp.post("/queue")
def queue_ended() -> Response:
    """Twilio reports how the caller left the queue."""
    call_sid, seq = parse_call_sid(), parse_seq()
    result = documented("QueueResult", QUEUE_RESULTS)
    detail = {"queue_result": result, "queue_time": field("QueueTime")}
    return _continue_call(call_sid, seq, "queue", lambda _ctx: flow.QueueEnded(result), detail)


@bp.post("/recorded/<step>")
def recorded(step: str) -> Response:
    """The <Record> action (with a recording), or the redirect after an empty one.

    Twilio's <Record> page: a key of finishOnKey ends the recording at once and is sent as
    `Digits` ("hangup" when the caller hung up); a silent recording has RecordingDuration
    0. Either may mean nothing was said: then the flow moves on at once, with no wait for
    recognition (flow.recording_heard).
    """
    call_sid, seq = parse_call_sid(), parse_seq()
    recording_sid, url = parse_recording_sid(required=False), field("RecordingUrl")
    duration, digits = field("RecordingDuration"), field("Digits")

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
    call_sid = parse_call_sid()
    recording_sid, url = parse_recording_sid(required=True), field("RecordingUrl")
    status = documented("RecordingStatus", RECORDING_STATUSES)
    purpose = request.args.get("purpose", "")
    if purpose not in values(RecordingPurpose):
        abort(400, description="unknown recording purpose")
    duration = field("RecordingDuration")
    claimed: dict[str, str] = {}

    def work(db) -> str:
        claim = desk().recording_status(db, call_sid, recording_sid, url, status, purpose, duration)
        claimed.update(claim or {})
        return ""

    handle("recording", call_sid, f"{recording_sid}:{status}", work)
    if claimed:
        # After the commit: the job reads what this delivery wrote.
        current_app.extensions["ivr.speech"].start(
            call_sid, recording_sid, claimed["url"], purpose, claimed["language"]
        )
    return Response(status=204)


@bp.post("/result/<step>")
def recognition_result(step: str) -> Response:
    """The waiting caller's poll: is the spoken number recognised yet?"""
    call_sid, seq = parse_call_sid(), parse_seq()
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
    call_sid, seq = parse_call_sid(), parse_seq()
    return _continue_call(
        call_sid,
        seq,
        "spoken",
        lambda context: context.speech_result(),
        {"spoken": True},
        expected_step=step,
    )


@bp.post("/status")
def call_status() -> Response:
    """Twilio's status callback: record the call's status and duration, once per status."""
    call_sid = parse_call_sid()
    status = documented("CallStatus", CALL_STATUSES)

    def work(db) -> str:
        desk().call_status(
            db,
            call_sid,
            status,
            field("CallDuration"),
            to_number=field("To"),
            from_number=field("From"),
            account_sid=field("AccountSid"),
        )
        return ""

    handle("status", call_sid, status_seq(status), work)
    live = current_app.extensions.get("ivr.live")
    if live is not None and status in FINAL_CALL_STATUSES:
        live.end_call(call_sid)  # a stream never outlives its call
    return Response(status=204)


@bp.post("/fallback")
def fallback() -> Response:
    """Twilio's fallback URL: something failed; apologise and still give ticket + operator."""
    call_sid = request.form.get("CallSid", "")
    try:
        if not CALL_SID_PATTERN.match(call_sid):
            raise LookupError("no usable CallSid")
        error_code, error_url = field("ErrorCode"), field("ErrorUrl")
        log.error(
            "Twilio used the fallback URL",
            extra={"call_sid": call_sid, "error_code": error_code, "error_url": error_url},
        )
        if not re.fullmatch(r"[0-9]{5}", error_code):
            abort(400, description="ErrorCode is not a Twilio error code")
        failed_seq = seq_of(error_url)
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
                to_number=field("To"),
                from_number=field("From"),
                account_sid=field("AccountSid"),
            )
            body = _render(answer)
            if arrived and answer.seq != arrived["seq"]:
                # A replay arriving after this commit finds the call one step on: it gets
                # the same answer from there too, not a second fallback.
                key = f"{call_sid}:fallback:{error_code}:at{answer.seq}"
                call_store.store_response(db, key, call_sid, body, desk().clock.now())
            return body

        return handle("fallback", call_sid, delivery_key, work)
    except Exception as error:  # noqa: BLE001 - the caller must still hear something sensible
        if not isinstance(error, LookupError | HTTPException):  # HTTPException: a bad field
            log.exception("fallback failed; queueing the caller", extra={"call_sid": call_sid})
        return twilio_http.twiml(twilio_http.apology(DEFAULT_LANGUAGE, call_sid))

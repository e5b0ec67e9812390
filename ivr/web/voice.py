"""Twilio webhooks: check the signature, turn the request into a flow event, persist, answer TwiML.

Every URL Twilio is sent to carries the call's step counter (`seq`). A delivery is handled
once: its answer is stored under (CallSid, kind, seq) and a retry of the same delivery gets
the stored TwiML back without touching anything else. Each delivery runs in one
`BEGIN IMMEDIATE` transaction, so a crash leaves either all of it or none of it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, request
from twilio.request_validator import RequestValidator
from werkzeug.exceptions import HTTPException

from ivr import db as database
from ivr import flow, get_db
from ivr.config import Settings
from ivr.hours import Clock, is_open, next_opening, parse_instant
from ivr.operators import choose_operator, operator_from_row
from ivr.prompts import Prompts
from ivr.tickets import new_ticket_number
from ivr.twiml import Links, render, render_apology, render_queue_wait, spoken_texts

bp = Blueprint("voice", __name__, url_prefix="/twilio")
log = logging.getLogger("ivr.voice")

# \Z, not $: "$" also matches before a trailing newline ("CA...\n" is not a CallSid).
CALL_SID_PATTERN = re.compile(r"^CA[0-9a-fA-F]{32}\Z")
RECORDING_SID_PATTERN = re.compile(r"^RE[0-9a-fA-F]{32}\Z")
RECORD_PURPOSES = {
    "order_speech": "order_number",
    "confirm_speech": "confirm",
    "description": "description",
}
DIGITS_PATTERN = re.compile(r"^[0-9*#]{0,64}\Z")
FINAL_CALL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
# A hang-up at any of these (keys, speaking, waiting for a recognition) is "in the menu".
MENU_STEPS = (*flow.INPUT_STEPS, *flow.RECORD_STEPS, *flow.WAIT_STEPS)
MAX_FIELD_LENGTH = 256


def _settings() -> Settings:
    return current_app.extensions["ivr.settings"]


def _clock() -> Clock:
    return current_app.extensions["ivr.clock"]


def _catalogue() -> dict[str, Prompts]:
    return current_app.extensions["ivr.prompts"]


def _twiml(body: str) -> Response:
    return Response(body, mimetype="application/xml")


def _signed_url() -> str:
    """The URL Twilio signed: the public URL when we sit behind a proxy, else what we saw."""
    query = request.query_string.decode("latin-1")  # exactly as sent, not re-encoded
    suffix = request.path + (f"?{query}" if query else "")
    public = _settings().public_url
    return (public.rstrip("/") if public else request.root_url.rstrip("/")) + suffix


@bp.before_request
def check_signature() -> None:
    """Refuse anything not signed with our auth token: 403, nothing read or written."""
    g.webhook_started = time.perf_counter()
    if (request.content_length or 0) > _settings().max_request_bytes:
        abort(413)  # refused before the body is read
    token = _settings().auth_token
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not signature:
        log.warning(
            "webhook refused: %s",
            "no auth token set" if not token else "no signature",
            extra={"path": request.path},
        )
        abort(403)
    try:
        valid = RequestValidator(token).validate(_signed_url(), request.form, signature)
    except ValueError:  # a Host header with a bad port: not a URL Twilio could have signed
        valid = False
    if not valid:
        log.warning("webhook refused: bad signature", extra={"path": request.path})
        abort(403)


# Webhooks whose answer is TwiML for the caller (the others are notifications).
CALL_FLOW_ENDPOINTS = (
    "voice.incoming_call",
    "voice.gather",
    "voice.dial_ended",
    "voice.queue_ended",
    "voice.recorded",
    "voice.recognition_result",
)


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
    language = request.args.get("lang", "ru")
    prompts = _catalogue().get(language, _catalogue()["ru"])
    return _twiml(render_apology(prompts, f"support-{prompts.language}"))


def _is_number(text: str) -> bool:
    """Plain ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def _field(name: str, required: bool = False) -> str:
    value = request.form.get(name, "")
    if len(value) > MAX_FIELD_LENGTH:
        abort(400, description=f"{name} is too long")
    if required and not value:
        abort(400, description=f"{name} is missing")
    return value


def _call_sid() -> str:
    call_sid = _field("CallSid", required=True)
    if not CALL_SID_PATTERN.match(call_sid):
        abort(400, description="CallSid is malformed")
    return call_sid


def _seq() -> int:
    text = request.args.get("seq", "")
    if not _is_number(text) or len(text) > 9:
        abort(400, description="seq is missing or malformed")
    return int(text)


def _normalise_number(number: str) -> str:
    return re.sub(r"[^\d+]", "", number)


def _line_for(to_number: str) -> str:
    settings = _settings()
    normalised = _normalise_number(to_number)
    if normalised == _normalise_number(settings.international_number):
        return "international"
    if normalised != _normalise_number(settings.domestic_number):
        log.warning(
            "call to an unknown number gets the domestic line", extra={"to_number": to_number}
        )
    return "domestic"


def _speech():
    return current_app.extensions["ivr.speech"]


def _links(state: flow.CallState, seq: int) -> Links:
    purpose = RECORD_PURPOSES.get(state.step, "")
    return Links(
        record_action=f"/twilio/recorded/{state.step}?seq={seq}",
        recording_status=f"/twilio/recording-status?purpose={purpose}&lang={state.language}",
        poll=f"/twilio/result/{state.step}?seq={seq}",
        action=f"/twilio/gather/{state.step}?seq={seq}",
        dial_action=f"/twilio/dial?seq={seq}",
        enqueue_action=f"/twilio/queue?seq={seq}",
        wait_url=f"/twilio/queue/wait?lang={state.language}",
        dial_timeout=_settings().dial_timeout_seconds,
    )


class CallContext:
    """One webhook's work on one call, inside the delivery's transaction."""

    def __init__(self, db, call: dict[str, Any], now: datetime):
        self.db = db
        self.call = call
        # A simulated call lives at the instant it was placed "at" (see _simulated_now).
        self.now = parse_instant(call["simulated_now"]) if call.get("simulated_now") else now
        self.seq = call["seq"]
        self.state = flow.CallState.from_dict(json.loads(call["state"]))

    def event(self, kind: str, detail: dict[str, Any] | None = None, step: str | None = None):
        database.add_event(
            self.db,
            self.call["call_sid"],
            self.seq,
            self.now,
            kind,
            step or self.state.step,
            detail,
        )

    def perform(self, effect: flow.Effect) -> flow.Event:
        """Carry out what the flow asked for."""
        if isinstance(effect, flow.CreateTicket):
            return self.create_ticket(effect)
        if isinstance(effect, flow.LookupTicket):
            return self.lookup_ticket(effect)
        raise TypeError(f"unknown effect {effect!r}")

    def create_ticket(self, effect: flow.CreateTicket) -> flow.TicketReady:
        """This call's ticket and operator; a call never gets a second ticket."""
        settings = _settings()
        language = self.state.language
        call_sid = self.call["call_sid"]
        ticket = database.ticket_for_call(self.db, call_sid)
        roster = [operator_from_row(row) for row in database.list_operators(self.db, True)]
        if ticket is None:
            handled_at = (
                self.now
                if not effect.after_hours
                else next_opening(self.now, settings.opening_hours)
            )
            operator = choose_operator(roster, language, handled_at)
            hours = settings.resolution_hours.get(effect.category, 48)
            ticket = {
                "call_sid": call_sid,
                "caller_number": self.call["from_number"],
                "order_number": effect.order_number,
                "category": effect.category,
                "status": "open",
                "operator_id": operator.id if operator else None,
                "operator_name": operator.full_name if operator else None,
                "language": language,
                "after_hours": int(effect.after_hours),
                "callback_at": handled_at.isoformat() if effect.after_hours else None,
                "related_ticket": effect.related_ticket,
                "created_at": database.timestamp(self.now),
                "due_at": database.timestamp(handled_at + timedelta(hours=hours)),
                "updated_at": database.timestamp(self.now),
            }
            for _ in range(20):
                ticket["number"] = new_ticket_number()
                if database.insert_ticket(self.db, ticket):
                    break
            else:
                raise RuntimeError("could not draw a free ticket number")
            self.attach_description(effect.description_recording)
            self.event(
                "ticket",
                {
                    "ticket_number": ticket["number"],
                    "operator_id": ticket["operator_id"],
                    "operator_name": ticket["operator_name"],
                    "category": effect.category,
                    "order_number": effect.order_number,
                    "after_hours": effect.after_hours,
                },
            )
        operator = next((op for op in roster if op.id == ticket["operator_id"]), None)
        busy = bool(operator) and database.operator_on_call(self.db, operator.id, call_sid)
        return flow.TicketReady(
            number=ticket["number"],
            operator_name=operator.spoken_name(language) if operator else ticket["operator_name"],
            operator_endpoint=operator.endpoint if operator else None,
            operator_busy=busy,
            queue=f"operator-{operator.id}" if operator and busy else f"support-{language}",
            resolution_hours=settings.resolution_hours.get(ticket["category"], 48),
            callback_at=ticket["callback_at"],
        )

    def attach_description(self, recording_sid: str | None) -> None:
        """A description transcribed before the ticket existed goes onto it now."""
        recognition = database.get_recognition(self.db, recording_sid) if recording_sid else None
        if recognition and recognition["status"] == "done" and recognition["text"]:
            database.set_ticket_description(
                self.db,
                self.call["call_sid"],
                recognition["text"],
                recognition["confidence"],
                self.now,
            )

    def spoken_operator_name(self, ticket: dict[str, Any]) -> str | None:
        """The ticket's operator as this caller hears the name (Latin for English callers)."""
        row = (
            database.get_operator(self.db, ticket["operator_id"]) if ticket["operator_id"] else None
        )
        return (
            operator_from_row(row).spoken_name(self.state.language)
            if row
            else (ticket["operator_name"])
        )

    def lookup_ticket(self, effect: flow.LookupTicket) -> flow.TicketFound:
        """Find a ticket for the status menu; say whether this caller filed it."""
        ticket = database.get_ticket(self.db, effect.number)
        self.event("ticket_lookup", {"ticket_number": effect.number, "found": bool(ticket)})
        if ticket is None:
            return flow.TicketFound(number=effect.number, found=False)
        caller = _normalise_number(self.call["from_number"] or "")
        return flow.TicketFound(
            number=effect.number,
            found=True,
            caller_matches=bool(caller)
            and caller == _normalise_number(ticket["caller_number"] or ""),
            order_number=ticket["order_number"],
            status=ticket["status"],
            operator_name=self.spoken_operator_name(ticket),
            due_date=ticket["due_at"][:10],
        )

    def advance(self, event: flow.Event, input_detail: dict[str, Any] | None = None) -> str:
        """Run the flow, persist the new state and timeline, and return the TwiML."""
        if input_detail is not None:
            self.event("input", input_detail)
        self.state, step = flow.run(self.state, event, self.perform)
        g.call_step = step.name  # for the "webhook handled" log line
        self.seq += 1
        twiml = render(step, _catalogue(), self.state.language, _links(self.state, self.seq))
        self.event(
            "step", {"step": step.name, "end": step.end, "target": step.target}, step=step.name
        )
        if step.say:
            texts = spoken_texts(step, _catalogue(), self.state.language)
            self.event("prompt", {"texts": texts}, step=step.name)
        self.save()
        return twiml

    def save(self) -> None:
        state = self.state
        ticket = database.ticket_for_call(self.db, self.call["call_sid"])
        changes = {
            "seq": self.seq,
            "step": state.step,
            "state": json.dumps(state.to_dict(), ensure_ascii=False),
            "language": state.language,
            # An outcome the status callback set (the caller hung up) is kept.
            "outcome": state.outcome or self.call["outcome"],
            "order_number": state.order_number,
            "category": state.category,
            "updated_at": database.timestamp(self.now),
        }
        if ticket:
            changes.update(
                ticket_number=ticket["number"],
                operator_id=ticket["operator_id"],
                operator_name=ticket["operator_name"],
                order_number=state.order_number or ticket["order_number"],
                category=ticket["category"],
            )
        database.update_call(self.db, self.call["call_sid"], changes)


def _handle(kind: str, call_sid: str, seq: int | str, work) -> Response:
    """Run one delivery exactly once: a retry of the same delivery gets the stored answer."""
    started = time.perf_counter()
    db = get_db()
    key = f"{call_sid}:{kind}:{seq}"
    with database.write_transaction(db):
        answer = database.stored_response(db, key)
        if answer is not None:
            log.info(
                "duplicate delivery answered from store",
                extra={"call_sid": call_sid, "kind": kind, "seq": seq},
            )
            return _twiml(answer)
        answer = work(db)
        database.store_response(db, key, call_sid, answer, _clock().now())
    log.info(
        "webhook handled",
        extra={
            "call_sid": call_sid,
            "kind": kind,
            "seq": seq,
            "step": g.get("call_step"),
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "idempotency_token": request.headers.get("I-Twilio-Idempotency-Token", ""),
        },
    )
    return _twiml(answer)


@bp.post("/voice")
def incoming_call() -> Response:
    """A new call on either number."""
    call_sid = _call_sid()
    to_number, from_number = _field("To"), _field("From")

    def work(db) -> str:
        now = _simulated_now() or _clock().now()
        known = database.get_call(db, call_sid)
        # A status callback may have arrived first and made a bare row ("start", seq 0):
        # the call still starts. Any other known call is re-presented where it is.
        if known is not None and (
            known["step"] != "start" or known["status"] in FINAL_CALL_STATUSES
        ):
            return _reprompt(CallContext(db, known, now))
        line = _line_for(to_number)
        open_now = is_open(now, _settings().opening_hours)
        row = {
            "call_sid": call_sid,
            "account_sid": _field("AccountSid"),
            "line": line,
            "to_number": to_number,
            "from_number": from_number,
            "started_at": database.timestamp(now),
            "updated_at": database.timestamp(now),
            "status": (known or {}).get("status") or _field("CallStatus") or "ringing",
            "step": "start",
            "seq": 0,
            "after_hours": int(not open_now),
            # A simulated call keeps its instant for every later webhook (see CallContext).
            "simulated_now": now.isoformat() if _simulated_now() else None,
        }
        if known is None:
            database.insert_call(db, row)
        else:
            database.update_call(db, call_sid, row)
        context = CallContext(db, database.get_call(db, call_sid), now)
        context.event("call_started", {"line": line, "to": to_number, "open": open_now})
        log.info(
            "call started",
            extra={
                "call_sid": call_sid,
                "line": line,
                "from_number": from_number,
                "open": open_now,
            },
        )
        started = flow.CallStarted(line, open_now, _speech().languages())
        return context.advance(started)

    return _handle("voice", call_sid, 0, work)


def _simulated_now() -> datetime | None:
    """The instant a simulated call is placed at (`?simulated_now=` on the signed URL).

    Honoured only when IVR_ALLOW_SIMULATED_TIME is on (emulator runs); never in production.
    """
    text = request.args.get("simulated_now", "")
    if not text or not _settings().allow_simulated_time:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        abort(400, description="simulated_now is not an ISO-8601 instant")


def _reprompt(context: CallContext) -> str:
    """Answer a stale or unexpected request by repeating where the call is now."""
    step = flow.current_step(context.state)
    return render(step, _catalogue(), context.state.language, _links(context.state, context.seq))


def _keys() -> tuple[str, dict[str, Any]]:
    """The caller's keys as the flow sees them; anything that is not a key is a wrong key."""
    raw = request.form.get("Digits", "")
    if DIGITS_PATTERN.match(raw):
        return raw, {"digits": raw}
    return "?", {"digits": raw[:64], "invalid": True}


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
    status = _field("DialCallStatus") or "failed"
    detail = {"dial_status": status, "dial_duration": _field("DialCallDuration")}
    return _continue_call(call_sid, seq, "dial", lambda _ctx: flow.DialEnded(status), detail)


@bp.post("/queue")
def queue_ended() -> Response:
    """Twilio reports how the caller left the queue."""
    call_sid, seq = _call_sid(), _seq()
    result = _field("QueueResult") or "error"
    detail = {"queue_result": result, "queue_time": _field("QueueTime")}
    return _continue_call(call_sid, seq, "queue", lambda _ctx: flow.QueueEnded(result), detail)


def _continue_call(call_sid, seq, kind, make_event, detail, expected_step=None) -> Response:
    def work(db) -> str:
        call = database.get_call(db, call_sid)
        if call is None:
            abort(404, description="unknown call")
        context = CallContext(db, call, _clock().now())
        if call["ended_at"] and kind == "dial" and detail.get("dial_status") != "completed":
            # The caller hung up while the operator's phone rang: not connected, not queued.
            context.event("input", detail)
            database.update_call(db, call_sid, {"outcome": "hung_up_before_answer"})
            ended = flow.Step(flow.FINAL_STEP, end="hangup")
            return render(ended, _catalogue(), context.state.language, _links(context.state, seq))
        if kind in ("gather", "result") and call["ended_at"]:
            # The caller has hung up (a late or retried delivery): nothing to advance.
            context.event("late_request", {"kind": kind, "seq": seq, "step": expected_step})
            ended = flow.Step(flow.FINAL_STEP, end="hangup")
            return render(ended, _catalogue(), context.state.language, _links(context.state, seq))
        stale = seq != context.seq or (expected_step and expected_step != context.state.step)
        if stale:
            context.event("stale_request", {"kind": kind, "seq": seq, "step": expected_step})
            log.warning(
                "stale webhook: repeating the current step",
                extra={"call_sid": call_sid, "seq": seq, "current_seq": context.seq},
            )
            return _reprompt(context)
        return context.advance(make_event(context), detail)

    return _handle(kind, call_sid, seq, work)


@bp.post("/recorded/<step>")
def recorded(step: str) -> Response:
    """The <Record> action (with a recording), or the redirect after an empty one."""
    call_sid, seq = _call_sid(), _seq()
    recording_sid, url = _field("RecordingSid"), _field("RecordingUrl")
    if recording_sid and not RECORDING_SID_PATTERN.match(recording_sid):
        abort(400, description="RecordingSid is malformed")
    duration = _field("RecordingDuration")

    def make_event(context: CallContext) -> flow.Event:
        if not (recording_sid and url) or _recording_of_another_call(context, recording_sid):
            return flow.NothingRecorded()
        purpose = RECORD_PURPOSES.get(context.state.step)
        if purpose:
            _note_recording(context, recording_sid, url, purpose, duration)
        return flow.Recorded(recording_sid)

    detail = (
        {"recording_sid": recording_sid, "duration": duration}
        if recording_sid
        else {"recording": "empty"}
    )
    return _continue_call(call_sid, seq, "recorded", make_event, detail, expected_step=step)


def _recording_of_another_call(context: CallContext, sid: str) -> bool:
    """A RecordingSid already known for another call: never touched or read from this one."""
    known = database.get_recording(context.db, sid) or database.get_recognition(context.db, sid)
    if known is None or known["call_sid"] == context.call["call_sid"]:
        return False
    log.warning(
        "webhook names a recording of another call: ignored",
        extra={"call_sid": context.call["call_sid"], "recording_sid": sid},
    )
    return True


def _note_recording(context: CallContext, sid: str, url: str, purpose: str, duration: str):
    """Remember a recording and its (pending) recognition, whichever webhook comes first."""
    now = database.timestamp(context.now)
    database.insert_recording_once(
        context.db,
        {
            "sid": sid,
            "call_sid": context.call["call_sid"],
            "purpose": purpose,
            "attempt": context.state.speech_failures + 1,
            "url": url,
            "duration": float(duration) if _is_number(duration) else None,
            "status": "pending",
            "created_at": now,
            "updated_at": now,
        },
    )
    database.add_pending_recognition(
        context.db,
        {
            "call_sid": context.call["call_sid"],
            "recording_sid": sid,
            "purpose": purpose,
            "attempt": context.state.speech_failures + 1,
            "language": context.state.language,
            "status": "pending",
            "created_at": now,
        },
    )


@bp.post("/recording-status")
def recording_status() -> Response:
    """Twilio's recordingStatusCallback: a finished recording is fetched and recognised."""
    call_sid = _call_sid()
    recording_sid, url = _field("RecordingSid"), _field("RecordingUrl")
    status = _field("RecordingStatus") or "unknown"
    if not RECORDING_SID_PATTERN.match(recording_sid):
        abort(400, description="RecordingSid is malformed")
    purpose = request.args.get("purpose", "")
    if purpose not in RECORD_PURPOSES.values():
        abort(400, description="unknown recording purpose")
    claimed: dict[str, Any] = {}

    def work(db) -> str:
        call = database.get_call(db, call_sid)
        if call is None:
            abort(404, description="unknown call")
        context = CallContext(db, call, _clock().now())
        if _recording_of_another_call(context, recording_sid):
            abort(400, description="the recording belongs to another call")
        context.event("recording_status", {"recording_sid": recording_sid, "status": status})
        if status == "completed" and url:
            _note_recording(context, recording_sid, url, purpose, _field("RecordingDuration"))
            database.update_recording(db, recording_sid, {"url": url})
            if database.claim_recording(db, recording_sid, context.now):
                claimed.update(url=url, language=context.state.language)
        else:
            now = database.timestamp(context.now)
            database.insert_recording_once(
                db,
                {
                    "sid": recording_sid,
                    "call_sid": call_sid,
                    "purpose": purpose,
                    "status": "pending",
                    "created_at": now,
                    "updated_at": now,
                },
            )
            database.update_recording(
                db,
                recording_sid,
                {
                    "status": "absent" if status == "absent" else "failed",
                    "error": status,
                    "updated_at": now,
                },
            )
            database.add_pending_recognition(
                db,
                {
                    "call_sid": call_sid,
                    "recording_sid": recording_sid,
                    "purpose": purpose,
                    "language": context.state.language,
                    "status": "pending",
                    "created_at": database.timestamp(context.now),
                },
            )
            database.complete_recognition(
                db,
                recording_sid,
                {
                    "status": "done",
                    "ok": 0,
                    "reason": f"recording_{status}",
                    "completed_at": database.timestamp(context.now),
                },
            )
        return ""

    _handle("recording", call_sid, f"{recording_sid}:{status}", work)
    if claimed:
        # After the commit: the job reads what this delivery wrote.
        _speech().start(call_sid, recording_sid, claimed["url"], purpose, claimed["language"])
    return Response(status=204)


@bp.post("/result/<step>")
def recognition_result(step: str) -> Response:
    """The waiting caller's poll: is the spoken number recognised yet?"""
    call_sid, seq = _call_sid(), _seq()

    def make_event(context: CallContext) -> flow.Event:
        sid = context.state.recording
        recognition = database.get_recognition(context.db, sid) if sid else None
        if recognition is None or recognition["status"] != "done":
            return flow.SpeechResult(ready=False)
        return flow.SpeechResult(
            ready=True,
            ok=bool(recognition["ok"]),
            digits=recognition["digits"] or "",
            reason=recognition["reason"],
        )

    return _continue_call(call_sid, seq, "result", make_event, {"poll": True}, expected_step=step)


@bp.post("/queue/wait")
def queue_wait() -> Response:
    """Twilio's wait URL: tell the queued caller their position (Twilio loops this)."""
    language = request.args.get("lang", "ru")
    prompts = _catalogue().get(language, _catalogue()["ru"])
    position = _field("QueuePosition")
    return _twiml(render_queue_wait(prompts, int(position) if _is_number(position) else None))


@bp.post("/status")
def call_status() -> Response:
    """Twilio's status callback: record the call's status and duration, once per status."""
    call_sid = _call_sid()
    status = _field("CallStatus") or "unknown"
    duration = _field("CallDuration")

    def work(db) -> str:
        now = _clock().now()
        call = database.get_call(db, call_sid)
        if call is None:
            line = _line_for(_field("To"))
            database.insert_call(
                db,
                {
                    "call_sid": call_sid,
                    "account_sid": _field("AccountSid"),
                    "line": line,
                    "to_number": _field("To"),
                    "from_number": _field("From"),
                    "started_at": database.timestamp(now),
                    "updated_at": database.timestamp(now),
                    "step": "start",
                    "seq": 0,
                },
            )
            call = database.get_call(db, call_sid)
        context = CallContext(db, call, now)
        now = context.now  # a simulated call ends at its own instant
        context.event("status", {"status": status, "duration": duration})
        changes: dict[str, Any] = {"updated_at": database.timestamp(now)}
        already_final = call["status"] in FINAL_CALL_STATUSES
        if not already_final:
            changes["status"] = status
        if status in FINAL_CALL_STATUSES and not already_final:
            changes["ended_at"] = database.timestamp(now)
            if _is_number(duration):
                changes["duration"] = int(duration)
            if call["outcome"] is None:
                changes["outcome"] = "hung_up_in_menu" if call["step"] in MENU_STEPS else "hung_up"
                if status != "completed":
                    changes["outcome"] = status
            elif call["outcome"] == "connecting":
                changes["outcome"] = "connected"
        database.update_call(db, call_sid, changes)
        return ""

    _handle("status", call_sid, _status_seq(status), work)
    return Response(status=204)


def _status_seq(status: str) -> int:
    """Status callbacks are deduplicated per status (a retry of 'completed' is one record)."""
    order = ("queued", "initiated", "ringing", "in-progress", "answered", *FINAL_CALL_STATUSES)
    return order.index(status) + 1000 if status in order else 999


@bp.post("/fallback")
def fallback() -> Response:
    """Twilio's fallback URL: something failed; apologise and still give ticket + operator."""
    call_sid = request.form.get("CallSid", "")
    catalogue = _catalogue()
    try:
        if not CALL_SID_PATTERN.match(call_sid):
            raise LookupError("no usable CallSid")
        log.error(
            "Twilio used the fallback URL",
            extra={
                "call_sid": call_sid,
                "error_code": _field("ErrorCode"),
                "error_url": _field("ErrorUrl"),
            },
        )

        def work(db) -> str:
            call = database.get_call(db, call_sid)
            if call is None:
                raise LookupError("unknown call")
            context = CallContext(db, call, _clock().now())
            context.event(
                "fallback", {"error_code": _field("ErrorCode"), "error_url": _field("ErrorUrl")}
            )
            context.state = replace(context.state, step="fallback")
            return context.advance(flow.TwilioFallback())

        # Keyed on signed fields only: the idempotency header is not signed, so a replay
        # with a fresh token must still find the stored answer.
        delivery = f"{_field('ErrorCode')}:{_field('ErrorUrl')}"
        return _handle("fallback", call_sid, delivery, work)
    except Exception as error:  # noqa: BLE001 - the caller must still hear something sensible
        if not isinstance(error, LookupError | HTTPException):  # HTTPException: a bad field
            log.exception("fallback failed; queueing the caller", extra={"call_sid": call_sid})
        return _twiml(render_apology(catalogue["ru"], "support-ru"))

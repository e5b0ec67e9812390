"""The ACD's webhooks: the queue's wait URL and callback offer, operators' legs, SMS status.

The dispatcher (`ivr.dispatch`) places operators' legs and ticket SMS through Twilio's REST
API; Twilio reports on them here: an operator picked up (whisper the ticket, then take the
caller out of their queue or dial the customer back), their <Dial> ended, their leg's
status, a message's delivery status. The queue's wait URL tells a waiting caller their
place and offers a callback after the longest wait. The HTTP side is `ivr.web.twilio_http`.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, abort, g, request

from ivr import db as database
from ivr.calls import Refused, UnknownCall, queue_name
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import core
from ivr.db import tickets as ticket_store
from ivr.dispatch import LEG_SID_PATTERN, estimate_wait_minutes, line_number
from ivr.dispatch import SPEED_OF_ANSWER_WINDOW as ASA_WINDOW
from ivr.hours import parse_instant
from ivr.operators import operator_from_row
from ivr.twiml import (
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
    EventKind,
    LegPurpose,
    Presence,
    QueueState,
    Step,
)
from ivr.web import twilio_http
from ivr.web.context import desk, get_db, settings
from ivr.web.i18n import LABELS
from ivr.web.twilio_http import (
    CALL_SID_PATTERN,
    URL_PREFIX,
    dispatcher,
    documented,
    field,
    handle,
    log,
    parse_call_sid,
    parse_keys,
    public_prefix,
    status_seq,
    webhook_blueprint,
)

bp = webhook_blueprint("operator_hooks", __name__)

LEG_SID = re.compile(rf"^{LEG_SID_PATTERN}\Z")
MESSAGE_SID_PATTERN = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}\Z")
CUSTOMER_NUMBER = re.compile(r"^\+?[0-9]{3,16}\Z")
WHISPER_DESCRIPTION_WORDS = 12


# The queue: a waiting caller's wait URL and callback offer -----------------------------


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
        return twilio_http.twiml(render_queue_wait(prompts, None))
    waited = (now - parse_instant(entry["entered_at"])).total_seconds()
    longest = settings().queue_max_wait_seconds
    if waited >= longest and entry["ticket_number"]:
        offer = f"{public_prefix()}{URL_PREFIX}/queue/offer?lang={prompts.language}"
        return twilio_http.twiml(render_queue_wait(prompts, position, None, offer_action=offer))
    speed = acd_store.average_speed_of_answer(db, now - ASA_WINDOW)
    minutes = estimate_wait_minutes(position, speed, _serving(db, entry["language"]), waited)
    # Say it again in about 30 s, or at the longest wait if that comes sooner.
    pause = int(min(30, max(1, longest - waited))) if waited < longest else 30
    return twilio_http.twiml(render_queue_wait(prompts, position, minutes, pause_seconds=pause))


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
    call_sid = parse_call_sid()
    wait_url = f"{public_prefix()}{URL_PREFIX}/queue/wait?lang={request.args.get('lang', '')}"
    digits, _detail = parse_keys()
    if digits != "1":
        return twilio_http.twiml(render_queue_leave(wait_url, leave=False))
    db = get_db()
    with database.write_transaction(db):
        entry = acd_store.get_entry(db, call_sid)
        if entry is None:
            abort(404, description="not in the queue")
        now = desk().wall_clock.now()
        if acd_store.leave_queue(db, call_sid, QueueState.LEFT, now):
            if entry["ticket_number"]:
                acd_store.request_callback(db, entry["ticket_number"], now)
            call_store.add_event_at_current_seq(
                db,
                call_sid,
                desk().clock.now(),
                EventKind.CALLBACK_REQUESTED,
                Step.QUEUE,
                {"ticket_number": entry["ticket_number"]},
            )
    return twilio_http.twiml(render_queue_leave(wait_url, leave=True))


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
    leg_sid, call_sid = _leg_sid(leg_sid), parse_call_sid()
    prefix = public_prefix() + URL_PREFIX

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

    return handle("operator", call_sid, leg_sid, work)


@bp.post("/operator/<leg_sid>/dialed")
def operator_dialed(leg_sid: str) -> Response:
    """The operator's <Dial> ended (the caller's queue, or the customer's phone)."""
    leg_sid, call_sid = _leg_sid(leg_sid), parse_call_sid()
    status = documented("DialCallStatus", DIAL_CALL_STATUSES)

    def work(db) -> str:
        leg = _leg_or_404(db, leg_sid, call_sid)
        if leg["purpose"] == LegPurpose.CALLBACK:
            dispatcher().callback_dialled(db, leg, status)
        return render_operator_goodbye(desk().prompts["ru"], None)

    return handle("operator-dialed", call_sid, leg_sid, work)


@bp.post("/operator-status")
def operator_status() -> Response:
    """The operator leg's status callback: answered, or ended (free again: dispatch)."""
    call_sid = parse_call_sid()
    leg_sid = _leg_sid(request.args.get("leg", ""))
    status = documented("CallStatus", CALL_STATUSES)

    def work(db) -> str:
        leg = _leg_or_404(db, leg_sid, call_sid)
        if dispatcher().leg_status(db, leg, call_sid, status):
            g.wake_dispatcher = True
        return ""

    handle("operator-status", call_sid, f"{leg_sid}:{status_seq(status)}", work)
    return Response(status=204)


@bp.post("/sms-status")
def sms_status() -> Response:
    """A ticket SMS's status callback: the delivery status goes on record."""
    message_sid = field("MessageSid", required=True)
    if not MESSAGE_SID_PATTERN.match(message_sid):
        abort(400, description="MessageSid is malformed")
    status = documented("MessageStatus", MESSAGE_STATUSES)
    db = get_db()
    with database.write_transaction(db):
        known = dispatcher().sms_status(db, message_sid, status)
    if not known:
        abort(404, description="unknown message")
    return Response(status=204)

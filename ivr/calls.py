"""The call service: what each Twilio webhook does to a call, on the database, with no Flask.

The web layer (`ivr.web.voice`) checks the signature, parses the request, keeps the
exactly-once store and renders TwiML; everything in between is here: the call row and its
timeline, the flow's effects (tickets, operator choice, due dates, ticket lookups),
recordings and recognitions, status callbacks. A `CallDesk` holds what every call needs
(settings, clock, prompts, the speech languages); each webhook opens a `CallContext` on one
call inside the delivery's transaction and gets an `Answer` back to render.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from ivr import flow
from ivr.config import Settings
from ivr.db import Database, timestamp
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.hours import Clock, is_open, next_opening, parse_instant
from ivr.operators import choose_operator, operator_from_row
from ivr.prompts import Prompts
from ivr.tickets import new_ticket_number
from ivr.twiml import spoken_texts
from ivr.vocabulary import (
    CONNECTED_DIAL_STATUSES,
    EventKind,
    Line,
    Outcome,
    Presence,
    QueueState,
    Step,
    TicketStatus,
)

log = logging.getLogger("ivr.calls")

FINAL_CALL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
# A hang-up at any of these (keys, speaking, waiting for a recognition) is "in the menu".
MENU_STEPS = (*flow.INPUT_STEPS, *flow.RECORD_STEPS, *flow.WAIT_STEPS)
TICKET_NUMBER_DRAWS = 20


class UnknownCall(LookupError):
    """A webhook names a call this service has no record of."""


class Refused(ValueError):
    """A webhook asks for something this call must not do (its message says what)."""


@dataclass(frozen=True)
class Answer:
    """What the caller hears next, with what the web layer needs to build its URLs."""

    turn: flow.Turn
    state: flow.CallState
    seq: int
    sms_requested: bool = False  # the ticket's SMS waits to be sent (after the commit)


@dataclass(frozen=True)
class CallDesk:
    """What every call needs: settings, the business clock, prompts, the speech languages."""

    settings: Settings
    clock: Clock
    prompts: dict[str, Prompts]
    speech_languages: Callable[[], tuple[str, ...]] = tuple
    # Real elapsed time for the queue (IVR_NOW fixes only the business clock).
    wall_clock: Clock = field(default_factory=Clock, compare=False)
    speech_mode: str = "record"  # "stream": Media Streams at the prompts (ivr.speech.live)
    _unknown_numbers_warned: set[str] = field(default_factory=set, compare=False, repr=False)

    def now(self, simulated: datetime | None = None) -> datetime:
        """The instant a webhook is handled at (a simulated call's own, if it has one)."""
        return simulated or self.clock.now()

    def line_for(self, to_number: str) -> Line:
        """Which line a call to this number came in on (unknown numbers: domestic).

        Each line has several identities (IVR_DOMESTIC_NUMBERS / IVR_INTERNATIONAL_NUMBERS):
        a Russian number reaches Twilio forwarded to a Twilio number or over a SIP trunk.
        """
        normalised = normalise_number(to_number)
        for line in (Line.INTERNATIONAL, Line.DOMESTIC):
            if normalised in self._identities[line]:
                return line
        warned = self._unknown_numbers_warned
        if to_number not in warned and len(warned) < 1000:
            warned.add(to_number)  # once per value, not once per call
            log.warning(
                "call to a number that is on neither line gets the domestic line: add it to "
                "IVR_DOMESTIC_NUMBERS or IVR_INTERNATIONAL_NUMBERS",
                extra={"to_number": to_number},
            )
        return Line.DOMESTIC

    @cached_property
    def _identities(self) -> dict[Line, frozenset[str]]:
        return {
            Line(line): frozenset(normalise_number(number) for number in numbers)
            for line, numbers in self.settings.line_numbers.items()
        }

    def _call_row(
        self,
        call_sid: str,
        known: dict[str, Any] | None,
        now: datetime,
        *,
        step: str,
        to_number: str,
        from_number: str,
        account_sid: str,
        status: str,
    ) -> dict[str, Any]:
        """The row of a call starting now (over a bare row a status callback may have made)."""
        known = known or {}
        return {
            **known,
            "call_sid": call_sid,
            "account_sid": account_sid,
            "line": self.line_for(to_number),
            "to_number": to_number,
            "from_number": from_number,
            "started_at": known.get("started_at") or timestamp(now),
            "updated_at": timestamp(now),
            "status": known.get("status") or status,
            "step": step,
            "seq": known.get("seq", 0),
            "state": "{}",
            "outcome": None,
            "after_hours": int(not is_open(now, self.settings.opening_hours)),
            "simulated_now": None,
        }

    # Webhooks --------------------------------------------------------------------------

    def start_call(
        self,
        db: Database,
        call_sid: str,
        *,
        to_number: str,
        from_number: str,
        account_sid: str,
        status: str,
        simulated_now: datetime | None = None,
    ) -> Answer:
        """A new call on either number: record it and answer with its first turn."""
        now = self.now(simulated_now)
        known = call_store.get_call(db, call_sid)
        # A status callback may have arrived first and made a bare row ("start", seq 0):
        # the call still starts. Any other known call is re-presented where it is.
        if known is not None and (
            known["step"] != Step.START or known["status"] in FINAL_CALL_STATUSES
        ):
            return CallContext(self, db, known, now).reprompt()
        row = self._call_row(
            call_sid,
            known,
            now,
            step=Step.START,
            to_number=to_number,
            from_number=from_number,
            account_sid=account_sid,
            status=status or "ringing",
        )
        # A simulated call keeps its instant for every later webhook (see CallContext).
        row["simulated_now"] = now.isoformat() if simulated_now else None
        line, open_now = row["line"], not row["after_hours"]
        context = CallContext(self, db, row, now, new=known is None)
        context.event(EventKind.CALL_STARTED, {"line": line, "to": to_number, "open": open_now})
        return context.advance(
            flow.CallStarted(line, open_now, self.speech_languages(), self.speech_mode)
        )

    def continue_call(
        self,
        db: Database,
        call_sid: str,
        seq: int,
        kind: str,
        make_event: Callable[[CallContext], flow.Event],
        detail: dict[str, Any],
        expected_step: str | None = None,
    ) -> Answer:
        """A webhook reached through TwiML (keys, dial/queue results, recordings, polls)."""
        context = self.open_call(db, call_sid)
        call = context.call
        dial_status = detail.get("dial_status")
        if call["ended_at"] and kind == "dial" and dial_status not in CONNECTED_DIAL_STATUSES:
            # The caller hung up while the operator's phone rang: not connected, not queued.
            context.event(EventKind.INPUT, detail)
            call_store.update_call(db, call_sid, {"outcome": Outcome.HUNG_UP_BEFORE_ANSWER})
            context.flush_events()
            return context.hang_up(seq)
        if kind in ("gather", "result", "spoken") and call["ended_at"]:
            # The caller has hung up (a late or retried delivery): nothing to advance.
            context.event(EventKind.LATE_REQUEST, {"kind": kind, "seq": seq, "step": expected_step})
            context.flush_events()
            return context.hang_up(seq)
        if seq != context.seq or (expected_step and expected_step != context.state.step):
            context.event(
                EventKind.STALE_REQUEST, {"kind": kind, "seq": seq, "step": expected_step}
            )
            log.warning(
                "stale webhook: repeating the current step",
                extra={"call_sid": call_sid, "seq": seq, "current_seq": context.seq},
            )
            context.flush_events()
            return context.reprompt()
        return context.advance(make_event(context), detail)

    def fallback(
        self,
        db: Database,
        call_sid: str,
        error_code: str,
        error_url: str,
        *,
        to_number: str = "",
        from_number: str = "",
        account_sid: str = "",
    ) -> Answer:
        """Twilio could not use our answer: apologise, and still give a ticket and operator.

        A call whose very first webhook failed is not on record yet: it is recorded here
        (line, caller, the error), so it gets a ticket and the status callback completes it.
        """
        known = call_store.get_call(db, call_sid)
        if known is None or known["step"] == Step.START:
            now = self.now()
            row = self._call_row(
                call_sid,
                known,
                now,
                step=Step.FALLBACK,
                to_number=to_number,
                from_number=from_number,
                account_sid=account_sid,
                status="in-progress",
            )
            line, open_now = row["line"], not row["after_hours"]
            context = CallContext(self, db, row, now, new=known is None)
            context.state = flow.CallState(line=line, is_open=open_now, step=Step.FALLBACK)
        else:
            context = self.open_call(db, call_sid)
            context.state = replace(context.state, step=Step.FALLBACK)
        context.event(EventKind.FALLBACK, {"error_code": error_code, "error_url": error_url})
        return context.advance(flow.TwilioFallback())

    def call_status(
        self,
        db: Database,
        call_sid: str,
        status: str,
        duration: str,
        *,
        to_number: str,
        from_number: str,
        account_sid: str,
    ) -> None:
        """Twilio's status callback: the call's status, and how it ended when it did."""
        call = call_store.get_call(db, call_sid)
        if call is None:
            now = self.clock.now()
            call = {
                "call_sid": call_sid,
                "account_sid": account_sid,
                "line": self.line_for(to_number),
                "to_number": to_number,
                "from_number": from_number,
                "started_at": timestamp(now),
                "updated_at": timestamp(now),
                "step": Step.START,
                "seq": 0,
                "state": "{}",
                "outcome": None,
                "status": None,
                "ended_at": None,
                "after_hours": 0,
                "simulated_now": None,
            }
            call_store.insert_call(db, call)
        context = CallContext(self, db, call, self.clock.now())
        now = context.now  # a simulated call ends at its own instant
        context.event(EventKind.STATUS, {"status": status, "duration": duration})
        changes: dict[str, Any] = {"updated_at": timestamp(now)}
        already_final = call["status"] in FINAL_CALL_STATUSES
        if not already_final:
            changes["status"] = status
        if status in FINAL_CALL_STATUSES and not already_final:
            changes["ended_at"] = timestamp(now)
            if is_ascii_number(duration):
                changes["duration"] = int(duration)
            if call["outcome"] is None:
                changes["outcome"] = (
                    Outcome.HUNG_UP_IN_MENU if call["step"] in MENU_STEPS else Outcome.HUNG_UP
                )
                if status != "completed":
                    changes["outcome"] = status
            elif call["outcome"] == Outcome.CONNECTING:
                # "connecting" ends as connected only if the call completed; a call that
                # failed (or was busy, unanswered, canceled) did not reach the operator.
                changes["outcome"] = Outcome.CONNECTED if status == "completed" else status
            entry = acd_store.get_entry(db, call_sid)
            if entry is not None:
                gone = QueueState.BRIDGED if entry["answered_at"] else QueueState.HUNG_UP
                acd_store.leave_queue(db, call_sid, gone, self.wall_clock.now())
        call_store.update_call(db, call_sid, changes)
        context.flush_events()

    def recording_status(
        self,
        db: Database,
        call_sid: str,
        recording_sid: str,
        url: str,
        status: str,
        purpose: str,
        duration: str,
    ) -> dict[str, str] | None:
        """Twilio's recordingStatusCallback; returns what to fetch when this delivery claims it."""
        context = self.open_call(db, call_sid)
        if context.recording_of_another_call(recording_sid):
            raise Refused("the recording belongs to another call")
        context.event(
            EventKind.RECORDING_STATUS, {"recording_sid": recording_sid, "status": status}
        )
        context.flush_events()
        if status == "completed" and url:
            context.note_recording(recording_sid, url, purpose, duration)
            speech_store.update_recording(db, recording_sid, {"url": url})
            if speech_store.claim_recording(db, recording_sid, context.now):
                return {"url": url, "language": context.state.language}
            return None
        now = timestamp(context.now)
        speech_store.insert_recording_once(
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
        speech_store.update_recording(
            db,
            recording_sid,
            {
                "status": "absent" if status == "absent" else "failed",
                "error": status,
                "updated_at": now,
            },
        )
        context.add_recognition(recording_sid, purpose)
        speech_store.complete_recognition(
            db,
            recording_sid,
            {"status": "done", "ok": 0, "reason": f"recording_{status}", "completed_at": now},
        )
        return None

    def open_call(self, db: Database, call_sid: str) -> CallContext:
        """The context of a known call; UnknownCall if there is none."""
        call = call_store.get_call(db, call_sid)
        if call is None:
            raise UnknownCall(call_sid)
        return CallContext(self, db, call, self.clock.now())


class CallContext:
    """One webhook's work on one call, inside the delivery's transaction."""

    def __init__(
        self, desk: CallDesk, db: Database, call: dict[str, Any], now: datetime, new: bool = False
    ):
        self.desk = desk
        self.db = db
        self.call = call
        self.new = new  # not in the database yet: inserted (once) when the turn is saved
        # A simulated call lives at the instant it was placed "at".
        self.now = parse_instant(call["simulated_now"]) if call.get("simulated_now") else now
        self.seq = call["seq"]
        self.state = flow.CallState.from_dict(json.loads(call["state"]))
        self._events: list[tuple[int, str, str | None, dict[str, Any] | None]] = []
        self.entered_queue = False  # the web layer wakes the dispatcher after the commit
        self.sms_requested = False  # ... and the SMS sender

    @property
    def call_sid(self) -> str:
        """This call's CallSid."""
        return self.call["call_sid"]

    def event(self, kind: str, detail: dict[str, Any] | None = None, step: str | None = None):
        """Add an entry to the call's timeline (written by `flush_events`, in one statement)."""
        self._events.append((self.seq, kind, step or self.state.step, detail))

    def flush_events(self) -> None:
        """Write the timeline entries gathered so far."""
        call_store.add_events(self.db, self.call_sid, self.now, self._events)
        self._events = []

    # The flow's effects ----------------------------------------------------------------

    def perform(self, effect: flow.Effect) -> flow.Event:
        """Carry out what the flow asked for."""
        if isinstance(effect, flow.CreateTicket):
            return self.create_ticket(effect)
        if isinstance(effect, flow.LookupTicket):
            return self.lookup_ticket(effect)
        if isinstance(effect, flow.RequestSms):
            return self.request_sms()
        raise TypeError(f"unknown effect {effect!r}")

    def create_ticket(self, effect: flow.CreateTicket) -> flow.TicketReady:
        """This call's ticket and operator; a call never gets a second ticket."""
        settings = self.desk.settings
        language = self.state.language
        ticket = None if self.new else ticket_store.ticket_for_call(self.db, self.call_sid)
        rows = roster_store.list_operators(self.db, True)
        roster = [operator_from_row(row) for row in rows]
        if ticket is None:
            ticket = self._new_ticket(effect, roster)
        operator = next((op for op in roster if op.id == ticket["operator_id"]), None)
        away = {row["id"] for row in rows if row.get("presence") == Presence.AWAY}
        busy = bool(operator) and (
            operator.id in away
            or call_store.operator_on_call(self.db, operator.id, self.call_sid)
            or acd_store.operator_engaged(self.db, operator.id)
        )
        return flow.TicketReady(
            number=ticket["number"],
            operator_name=operator.spoken_name(language) if operator else ticket["operator_name"],
            operator_endpoint=operator.endpoint if operator else None,
            operator_busy=busy,
            # Each caller waits in a queue of their own: <Dial><Queue> takes a queue's first
            # caller, so the dispatcher names exactly the caller it rang the operator for.
            queue=queue_name(self.call_sid),
            resolution_hours=settings.resolution_hours.get(ticket["category"], 48),
            callback_at=ticket["callback_at"],
            sms_offer=self._may_offer_sms(ticket),
        )

    def _may_offer_sms(self, ticket: dict[str, Any]) -> bool:
        """IVR_SMS_FROM set, a Russian mobile caller (+79...), and no SMS for this ticket yet."""
        caller = normalise_number(self.call.get("from_number") or "")
        return bool(
            self.desk.settings.sms_from
            and re.fullmatch(r"\+79\d{9}", caller)
            and acd_store.sms_for_ticket(self.db, ticket["number"]) is None
        )

    def request_sms(self) -> flow.SmsRequested:
        """Queue the ticket's SMS (sent after the commit, off the webhook's path)."""
        ticket = ticket_store.ticket_for_call(self.db, self.call_sid)
        if ticket is None:
            return flow.SmsRequested(ok=False)
        language = self.state.language
        prompts = self.desk.prompts.get(language) or self.desk.prompts["ru"]
        name = self._spoken_operator_name(ticket)
        line_number = self.desk.settings.line_numbers.get(self.state.line, ("",))[0]
        body = prompts.text(
            "sms_body" if name else "sms_body_unassigned",
            {
                "number": ticket["number"],
                "name": name or "",
                "date": ticket["due_at"][:10],
                "phone": line_number,
            },
        )
        now = timestamp(self.desk.wall_clock.now())
        added = acd_store.add_sms(
            self.db,
            {
                "ticket_number": ticket["number"],
                "call_sid": self.call_sid,
                "to_number": normalise_number(self.call["from_number"]),
                "language": language,
                "body": body,
                "status": "pending",
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            },
        )
        self.event(EventKind.SMS, {"ticket_number": ticket["number"], "requested": added})
        self.sms_requested = added
        return flow.SmsRequested(ok=True)

    def _new_ticket(self, effect: flow.CreateTicket, roster: list) -> dict[str, Any]:
        settings = self.desk.settings
        handled_at = (
            next_opening(self.now, settings.opening_hours) if effect.after_hours else self.now
        )
        operator = choose_operator(roster, self.state.language, handled_at)
        hours = settings.resolution_hours.get(effect.category, 48)
        ticket = {
            "call_sid": self.call_sid,
            "caller_number": self.call["from_number"],
            "order_number": effect.order_number,
            "category": effect.category,
            "status": TicketStatus.OPEN,
            "operator_id": operator.id if operator else None,
            "operator_name": operator.full_name if operator else None,
            "language": self.state.language,
            "after_hours": int(effect.after_hours),
            "callback_at": handled_at.isoformat() if effect.after_hours else None,
            "related_ticket": effect.related_ticket,
            "created_at": timestamp(self.now),
            "due_at": timestamp(handled_at + timedelta(hours=hours)),
            "updated_at": timestamp(self.now),
        }
        if self.new:
            self.save_call()  # the ticket refers to the call row
        for _ in range(TICKET_NUMBER_DRAWS):
            ticket["number"] = new_ticket_number()
            if ticket_store.insert_ticket(self.db, ticket):
                break
        else:
            raise RuntimeError("could not draw a free ticket number")
        # The call row carries its ticket's columns from now on (written once, here).
        columns = {
            "ticket_number": ticket["number"],
            "operator_id": ticket["operator_id"],
            "operator_name": ticket["operator_name"],
            "order_number": ticket["order_number"],
            "category": ticket["category"],
        }
        self.call.update(columns)
        call_store.update_call(self.db, self.call_sid, columns)
        self.attach_description(effect.description_recording)
        self.event(
            EventKind.TICKET,
            {
                "ticket_number": ticket["number"],
                "operator_id": ticket["operator_id"],
                "operator_name": ticket["operator_name"],
                "category": effect.category,
                "order_number": effect.order_number,
                "after_hours": effect.after_hours,
            },
        )
        return ticket

    def attach_description(self, recording_sid: str | None) -> None:
        """A description transcribed before the ticket existed goes onto it now."""
        recognition = (
            speech_store.get_recognition(self.db, recording_sid) if recording_sid else None
        )
        if recognition and recognition["status"] == "done" and recognition["text"]:
            ticket_store.set_ticket_description(
                self.db, self.call_sid, recognition["text"], recognition["confidence"], self.now
            )

    def lookup_ticket(self, effect: flow.LookupTicket) -> flow.TicketFound:
        """Find a ticket for the status menu; say whether this caller filed it."""
        ticket = ticket_store.get_ticket(self.db, effect.number)
        self.event(EventKind.TICKET_LOOKUP, {"ticket_number": effect.number, "found": bool(ticket)})
        if ticket is None:
            return flow.TicketFound(number=effect.number, found=False)
        caller = normalise_number(self.call["from_number"] or "")
        return flow.TicketFound(
            number=effect.number,
            found=True,
            caller_matches=bool(caller)
            and caller == normalise_number(ticket["caller_number"] or ""),
            order_number=ticket["order_number"],
            status=ticket["status"],
            operator_name=self._spoken_operator_name(ticket),
            due_date=ticket["due_at"][:10],
        )

    def _spoken_operator_name(self, ticket: dict[str, Any]) -> str | None:
        """The ticket's operator as this caller hears the name (Latin for English callers)."""
        row = (
            roster_store.get_operator(self.db, ticket["operator_id"])
            if ticket["operator_id"]
            else None
        )
        if row is None:
            return ticket["operator_name"]
        return operator_from_row(row).spoken_name(self.state.language)

    # Recordings ------------------------------------------------------------------------

    def recording_of_another_call(self, sid: str) -> bool:
        """A RecordingSid already known for another call: never touched or read from this one."""
        known = speech_store.get_recording(self.db, sid) or speech_store.get_recognition(
            self.db, sid
        )
        if known is None or known["call_sid"] == self.call_sid:
            return False
        log.warning(
            "webhook names a recording of another call: ignored",
            extra={"call_sid": self.call_sid, "recording_sid": sid},
        )
        return True

    def note_recording(self, sid: str, url: str, purpose: str, duration: str) -> None:
        """Remember a recording and its (pending) recognition, whichever webhook comes first."""
        now = timestamp(self.now)
        speech_store.insert_recording_once(
            self.db,
            {
                "sid": sid,
                "call_sid": self.call_sid,
                "purpose": purpose,
                "attempt": self.state.speech_failures + 1,
                "url": url,
                "duration": float(duration) if is_ascii_number(duration) else None,
                "status": "pending",
                "created_at": now,
                "updated_at": now,
            },
        )
        self.add_recognition(sid, purpose)

    def add_recognition(self, sid: str, purpose: str) -> None:
        """A pending recognition of a recording (at most one per recording)."""
        speech_store.add_pending_recognition(
            self.db,
            {
                "call_sid": self.call_sid,
                "recording_sid": sid,
                "purpose": purpose,
                "attempt": self.state.speech_failures + 1,
                "language": self.state.language,
                "status": "pending",
                "created_at": timestamp(self.now),
            },
        )

    def speech_result(self) -> flow.SpeechResult:
        """Where the recognition of the pending recording stands (for the waiting caller)."""
        sid = self.state.recording
        recognition = speech_store.get_recognition(self.db, sid) if sid else None
        if recognition is None or recognition["status"] != "done":
            return flow.SpeechResult(ready=False)
        return flow.SpeechResult(
            ready=True,
            ok=bool(recognition["ok"]),
            digits=recognition["digits"] or "",
            reason=recognition["reason"],
        )

    # Turns -----------------------------------------------------------------------------

    def advance(self, event: flow.Event, input_detail: dict[str, Any] | None = None) -> Answer:
        """Run the flow, persist the new state and timeline, and return the next turn."""
        if input_detail is not None:
            self.event(EventKind.INPUT, input_detail)
        old_step = self.state.step
        self.state, turn = flow.run(self.state, event, self.perform)
        self.seq += 1
        if turn.listen:
            # The utterance this prompt listens for is stored under a name both the
            # media socket and later webhooks derive from (CallSid, seq).
            self.state = replace(
                self.state, recording=stream_recording_sid(self.call_sid, self.seq)
            )
        self.event(
            EventKind.STEP, {"step": turn.name, "end": turn.end, "target": turn.target}, turn.name
        )
        if turn.say:
            texts = spoken_texts(turn, self.desk.prompts, self.state.language)
            self.event(EventKind.PROMPT, {"texts": texts}, step=turn.name)
        self.save_call()
        self._follow_queue(old_step, turn)
        return Answer(turn, self.state, self.seq, sms_requested=self.sms_requested)

    def _follow_queue(self, old_step: str, turn: flow.Turn) -> None:
        """Keep the caller's queue entry in step with the flow (the dispatcher reads it)."""
        now = self.desk.wall_clock.now()
        if turn.end == "enqueue":
            acd_store.enter_queue(
                self.db,
                {
                    "call_sid": self.call_sid,
                    "queue_name": turn.target or queue_name(self.call_sid),
                    "language": self.state.language,
                    "ticket_number": self.state.ticket_number,
                    "operator_id": self.call.get("operator_id"),
                    "entered_at": timestamp(now),
                },
            )
            self.entered_queue = True
            return
        if old_step != Step.QUEUE:
            return
        outcome = self.state.outcome
        state = {
            Outcome.CONNECTED: QueueState.BRIDGED,
            Outcome.HUNG_UP_IN_QUEUE: QueueState.HUNG_UP,
            Outcome.CALLBACK_AFTER_QUEUE: QueueState.LEFT,
        }.get(outcome, QueueState.GONE)
        acd_store.leave_queue(self.db, self.call_sid, state, now)
        if outcome == Outcome.CALLBACK_AFTER_QUEUE and self.state.ticket_number:
            acd_store.request_callback(self.db, self.state.ticket_number, now)

    def reprompt(self) -> Answer:
        """Answer a stale or unexpected request by repeating where the call is now."""
        return Answer(flow.current_step(self.state), self.state, self.seq)

    def hang_up(self, seq: int) -> Answer:
        """End the call's TwiML (the caller is already gone)."""
        return Answer(flow.Turn(flow.FINAL_STEP, end="hangup"), self.state, seq)

    def save_call(self) -> None:
        """Write the call's state (inserting the row on its first webhook) and its timeline."""
        state = self.state
        changes = {
            "seq": self.seq,
            "step": state.step,
            "state": json.dumps(state.to_dict(), ensure_ascii=False),
            "language": state.language,
            # An outcome the status callback set (the caller hung up) is kept.
            "outcome": state.outcome or self.call.get("outcome"),
            "order_number": state.order_number or self.call.get("order_number"),
            "category": state.category or self.call.get("category"),
            "updated_at": timestamp(self.now),
        }
        if self.new:
            self.call.update(changes)
            call_store.insert_call(self.db, self.call)
            self.new = False
        else:
            call_store.update_call(self.db, self.call_sid, changes)
        self.flush_events()


def queue_name(call_sid: str) -> str:
    """The caller's own Twilio queue (friendly names may have 64 characters)."""
    return f"call-{call_sid}"


def stream_recording_sid(call_sid: str, seq: int) -> str:
    """The recording (and recognition) name of the utterance streamed at (call, seq).

    Twilio-shaped ("RE" and 32 hex digits, a RecordingSid), derived, so the media socket
    and the webhooks agree on it without sharing memory.
    """
    return "RE" + hashlib.sha256(f"{call_sid}:{seq}".encode()).hexdigest()[:32]


def normalise_number(number: str) -> str:
    """A phone number with only its digits and '+'; a sip: URI without its parameters."""
    text = number.strip()
    if text.lower().startswith("sip:"):
        return text.split(";", 1)[0].lower()
    return re.sub(r"[^\d+]", "", text)


def is_ascii_number(text: str) -> bool:
    """Plain ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()

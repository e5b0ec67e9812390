"""One webhook's work on one call: `CallContext`, and the `Answer` it gives back.

The context holds the call's row and flow state inside the delivery's transaction; it
gathers the call's timeline, notes recordings and their recognitions, runs the flow
(`advance`), keeps the caller's queue entry in step, and writes the call once at the end.
The flow's effects (tickets, lookups, SMS) are `TicketEffects`' (ivr.calls.effects).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ivr import flow
from ivr.calls.effects import TicketEffects
from ivr.calls.identifiers import is_ascii_number, queue_name, stream_recording_sid
from ivr.db import Database, json_text, timestamp
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import speech as speech_store
from ivr.hours import parse_instant
from ivr.twiml import spoken_texts
from ivr.vocabulary import EventKind, Outcome, QueueState, Step

log = logging.getLogger("ivr.calls")


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


class CallContext(TicketEffects):
    """One webhook's work on one call, inside the delivery's transaction."""

    def __init__(
        self, desk: Any, db: Database, call: dict[str, Any], now: datetime, new: bool = False
    ):
        self.desk = desk  # the CallDesk that opened it (not imported: it imports this module)
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
            "state": json_text(state.to_dict()),
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

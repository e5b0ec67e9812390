"""The webhooks' entry points: `CallDesk`, what every call needs and what each webhook does.

A `CallDesk` holds the settings, the business and wall clocks, the prompts and the speech
languages. Each webhook calls one of its methods inside the delivery's transaction: a new
call (`start_call`), the next turn (`continue_call`), Twilio's fallback, a status callback,
a recording's status. It opens a `CallContext` (ivr.calls.context) on the call and returns
the `Answer` to render.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from ivr import flow
from ivr.calls.context import Answer, CallContext, Refused, UnknownCall
from ivr.calls.identifiers import is_ascii_number, normalise_number
from ivr.config import Settings
from ivr.db import Database, timestamp
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import speech as speech_store
from ivr.hours import Clock, is_open
from ivr.prompts import Prompts
from ivr.vocabulary import CONNECTED_DIAL_STATUSES, EventKind, Line, Outcome, QueueState, Step

log = logging.getLogger("ivr.calls")

FINAL_CALL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
# A hang-up at any of these (keys, speaking, waiting for a recognition) is "in the menu".
MENU_STEPS = (*flow.INPUT_STEPS, *flow.RECORD_STEPS, *flow.WAIT_STEPS)


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

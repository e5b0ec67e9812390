"""The flow's effects on the database: a call's ticket and operator, ticket lookups, the SMS.

`TicketEffects` is the part of `CallContext` (ivr.calls.context) that carries out what the
flow asks for (`flow.CreateTicket`, `flow.LookupTicket`, `flow.RequestSms`): drawing a
ticket number, choosing the operator and the due date, writing the ticket's columns onto
the call row once, offering and queueing the ticket's SMS, reading a ticket for the status
menu. It works on the context's call, state, database and timeline.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from ivr import flow
from ivr.calls.identifiers import normalise_number, queue_name
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.db import timestamp
from ivr.hours import next_opening
from ivr.operators import choose_operator, operator_from_row
from ivr.tickets import new_ticket_number
from ivr.vocabulary import EventKind, Presence, TicketStatus

TICKET_NUMBER_DRAWS = 20


class TicketEffects:
    """What the flow asks a call for: its ticket, a ticket lookup, the ticket's SMS.

    A mixin of `CallContext`: it uses the context's `desk`, `db`, `call`, `state`, `now`,
    `new`, `event` and `save_call`.
    """

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

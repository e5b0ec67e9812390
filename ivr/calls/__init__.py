"""The call service: what each Twilio webhook does to a call, on the database, with no Flask.

The web layer (`ivr.web.voice`, `ivr.web.operator_hooks`) checks the signature, parses the
request, keeps the exactly-once store and renders TwiML; everything in between is here: the
call row and its timeline, the flow's effects (tickets, operator choice, due dates, ticket
lookups), recordings and recognitions, status callbacks. A `CallDesk` holds what every call needs
(settings, clock, prompts, the speech languages); each webhook opens a `CallContext` on one
call inside the delivery's transaction and gets an `Answer` back to render.

The package: `desk` (the entry points, `CallDesk`), `context` (one webhook's work on one
call, `CallContext`, and its `Answer`), `effects` (tickets, operator choice, lookups and the
SMS: the flow's effects), `identifiers` (queue names, streamed recordings' SIDs, numbers).
"""

from ivr.calls.context import Answer, CallContext, Refused, UnknownCall
from ivr.calls.desk import FINAL_CALL_STATUSES, MENU_STEPS, CallDesk
from ivr.calls.identifiers import (
    is_ascii_number,
    normalise_number,
    queue_name,
    stream_recording_sid,
)

__all__ = [
    "FINAL_CALL_STATUSES",
    "MENU_STEPS",
    "Answer",
    "CallContext",
    "CallDesk",
    "Refused",
    "UnknownCall",
    "is_ascii_number",
    "normalise_number",
    "queue_name",
    "stream_recording_sid",
]

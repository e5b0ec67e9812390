"""The call flow as a pure state machine: (call state, event) -> (next state, reply).

No Flask, Twilio, SQL or speech here. The call service (`ivr.calls`) turns each webhook into
an event, calls `run`, performs any effect the flow asks for (create a ticket, look one
up), feeds the effect's result back in as another event, and the web layer renders the
final `Turn` as TwiML.

`state` holds `CallState` and the rules' numbers, `messages` the events in and the
replies out, `turns` what the caller hears at each step, `machine` the transitions.

Retry rule everywhere: a caller gets `MAX_TRIES` tries at a menu; after that the flow
never drops them, it routes them on (to an operator with a ticket, or, after hours, to a
callback ticket).
"""

from ivr.flow.machine import advance, current_step, pending_record, recording_heard, run, start
from ivr.flow.messages import (
    CallStarted,
    CreateTicket,
    DialEnded,
    Effect,
    Event,
    Gather,
    Keys,
    LookupTicket,
    NothingRecorded,
    QueueEnded,
    Record,
    Recorded,
    Reply,
    RequestSms,
    Say,
    SmsRequested,
    SpeechResult,
    TicketFound,
    TicketReady,
    Turn,
    TwilioFallback,
)
from ivr.flow.state import (
    CATEGORY_KEYS,
    CONNECT_STEPS,
    FINAL_STEP,
    INPUT_STEPS,
    LISTEN_STEPS,
    MAX_POLLS,
    MAX_REPEATS,
    MAX_SPEECH_TRIES,
    MAX_TRIES,
    ORDER_NUMBER_LENGTH,
    RECORD_STEPS,
    WAIT_STEPS,
    CallState,
)
from ivr.flow.turns import present

__all__ = [
    "CATEGORY_KEYS",
    "CONNECT_STEPS",
    "FINAL_STEP",
    "INPUT_STEPS",
    "LISTEN_STEPS",
    "MAX_POLLS",
    "MAX_REPEATS",
    "MAX_SPEECH_TRIES",
    "MAX_TRIES",
    "ORDER_NUMBER_LENGTH",
    "RECORD_STEPS",
    "WAIT_STEPS",
    "CallStarted",
    "CallState",
    "CreateTicket",
    "DialEnded",
    "Effect",
    "Event",
    "Gather",
    "Keys",
    "LookupTicket",
    "NothingRecorded",
    "QueueEnded",
    "Record",
    "Recorded",
    "Reply",
    "RequestSms",
    "Say",
    "SmsRequested",
    "SpeechResult",
    "TicketFound",
    "TicketReady",
    "Turn",
    "TwilioFallback",
    "advance",
    "current_step",
    "pending_record",
    "recording_heard",
    "present",
    "run",
    "start",
]

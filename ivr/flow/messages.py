"""What goes into the flow (events) and what comes out (turns for the caller, effects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallStarted:
    """Twilio answered a call on this line; `is_open` is decided once, at the start."""

    line: str
    is_open: bool
    speech_languages: tuple[str, ...] = ()
    speech_mode: str = "record"  # "stream": Media Streams at the prompt; "record": <Record>


@dataclass(frozen=True)
class Keys:
    """What the caller typed at a <Gather>; "" means nothing (time-out)."""

    digits: str


@dataclass(frozen=True)
class TicketReady:
    """A ticket was created (or already existed) for this call."""

    number: str
    operator_name: str | None
    operator_endpoint: str | None
    operator_busy: bool
    queue: str
    resolution_hours: int
    callback_at: str | None = None
    sms_offer: bool = False  # offer the ticket by SMS (IVR_SMS_FROM set, a +79... caller)


@dataclass(frozen=True)
class SmsRequested:
    """The ticket's SMS was put on its way (or could not be: `ok` False)."""

    ok: bool


@dataclass(frozen=True)
class TicketFound:
    """Result of looking up a ticket for the status menu."""

    number: str
    found: bool
    caller_matches: bool = False
    order_number: str | None = None
    status: str | None = None
    operator_name: str | None = None
    due_date: str | None = None


@dataclass(frozen=True)
class DialEnded:
    """Twilio reports how the <Dial> to the operator ended (DialCallStatus)."""

    status: str


@dataclass(frozen=True)
class QueueEnded:
    """Twilio reports how the caller left the queue (QueueResult)."""

    result: str


@dataclass(frozen=True)
class Recorded:
    """Twilio recorded the caller (the <Record> action, with a recording)."""

    recording_sid: str


@dataclass(frozen=True)
class NothingRecorded:
    """The <Record> got no audio (silence, or '#' at once): Twilio went on to the next verb."""


@dataclass(frozen=True)
class SpeechResult:
    """A poll for the background recognition of the pending recording."""

    ready: bool
    ok: bool = False
    digits: str = ""
    reason: str | None = None


@dataclass(frozen=True)
class TwilioFallback:
    """Twilio could not get usable TwiML for this call and called the fallback URL."""


Event = (
    CallStarted
    | Keys
    | TicketReady
    | TicketFound
    | DialEnded
    | QueueEnded
    | TwilioFallback
    | Recorded
    | NothingRecorded
    | SpeechResult
    | SmsRequested
)


# Replies -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """One prompt to speak: a key into prompts/<lang>.toml and its parameters."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    language: str | None = None


@dataclass(frozen=True)
class Gather:
    """Collect keypad digits; `say` is spoken inside the gather so callers can barge in."""

    num_digits: int | None = None
    finish_on_key: str = "#"
    timeout: int = 6


@dataclass(frozen=True)
class Record:
    """Record the caller after a beep; `purpose` says what the recording is for."""

    purpose: str
    max_length: int
    timeout: int
    finish_on_key: str = "#"


@dataclass(frozen=True)
class Turn:
    """What the caller hears next and how the call goes on (one turn of the IVR)."""

    name: str
    say: tuple[Say, ...] = ()
    gather: Gather | None = None
    # "wait" (gather/record pending), "poll", "hangup", "dial", "enqueue", "nothing"
    end: str = "wait"
    target: str | None = None
    record: Record | None = None
    # Stream mode: listen to the caller (<Start><Stream>) for this purpose during the turn.
    listen: str | None = None


@dataclass(frozen=True)
class CreateTicket:
    """Effect: create this call's ticket (at most one per call) and assign an operator."""

    order_number: str | None
    category: str
    after_hours: bool
    related_ticket: str | None = None
    description_recording: str | None = None
    before: tuple[Say, ...] = ()


@dataclass(frozen=True)
class LookupTicket:
    """Effect: look up a ticket for the status menu."""

    number: str
    before: tuple[Say, ...] = ()


@dataclass(frozen=True)
class RequestSms:
    """Effect: send the caller the ticket number and operator's name by SMS (once a ticket)."""

    before: tuple[Say, ...] = ()


Effect = CreateTicket | LookupTicket | RequestSms
Reply = Turn | Effect

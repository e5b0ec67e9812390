"""The service's words, defined once: lines, languages, steps, outcomes, purposes, statuses.

Every value stored in the database or shown in the console comes from one of these enums.
They are `StrEnum`s, so a member is its text (`Step.MAIN_MENU == "main_menu"`), goes into
JSON and SQL as that text, and a value read back from either compares equal to the member.
The console's labels for each member live in `ivr.web.i18n.LABELS`; a test checks that
every member has a Russian and an English label and that no label is left over.
"""

from __future__ import annotations

from enum import StrEnum


class Line(StrEnum):
    """Which of the two numbers the caller dialled."""

    DOMESTIC = "domestic"  # +7 800 234-55-55, free for callers in Russia
    INTERNATIONAL = "international"  # +7 495 232-10-00, for calls from abroad


class Language(StrEnum):
    """Languages the IVR speaks (and the console shows)."""

    RU = "ru"
    EN = "en"


DEFAULT_LANGUAGE = Language.RU


class Category(StrEnum):
    """What a request is about (the caller's choice at the category menu, keys 1-5)."""

    DELIVERY = "delivery"
    RETURNS = "returns"
    PAYMENT = "payment"
    QUALITY = "quality"
    OTHER = "other"


class Step(StrEnum):
    """Where a call is in the call tree (`calls.step`, the flow's `CallState.step`)."""

    START = "start"
    LANGUAGE = "language"
    MAIN_MENU = "main_menu"
    CLOSED_MENU = "closed_menu"
    ORDER_NUMBER = "order_number"
    ORDER_SPEECH = "order_speech"
    ORDER_WAIT = "order_wait"
    CONFIRM_ORDER = "confirm_order"
    CONFIRM_SPEECH = "confirm_speech"
    CONFIRM_WAIT = "confirm_wait"
    CATEGORY = "category"
    DESCRIPTION = "description"
    CREATING_TICKET = "creating_ticket"
    TICKET_INFO = "ticket_info"
    STATUS_TICKET = "status_ticket"
    STATUS_VERIFY = "status_verify"
    STATUS_REPORT = "status_report"
    CONNECT = "connect"
    QUEUE = "queue"
    FALLBACK = "fallback"
    ENDED = "ended"


class Outcome(StrEnum):
    """How a call ended up (`calls.outcome`); None on record means still in the menu."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    QUEUED = "queued"
    HUNG_UP_IN_QUEUE = "hung_up_in_queue"
    HUNG_UP_BEFORE_ANSWER = "hung_up_before_answer"
    AFTER_HOURS_CALLBACK = "after_hours_callback"
    CALLBACK_AFTER_QUEUE = "callback_after_queue"
    CLOSED_NO_REQUEST = "closed_no_request"
    STATUS_TOLD = "status_told"
    HUNG_UP_IN_MENU = "hung_up_in_menu"
    HUNG_UP = "hung_up"
    # The call itself did not go through (Twilio's final CallStatus values).
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"


# Outcomes where the caller reached (or is reaching) an operator: the dashboard's share.
REACHED_OPERATOR = (Outcome.CONNECTED, Outcome.QUEUED)


class RecordingPurpose(StrEnum):
    """What a recording of the caller is for (`recordings.purpose`, `recognitions.purpose`)."""

    ORDER_NUMBER = "order_number"
    CONFIRM = "confirm"  # a spoken "да" / "нет" at the read-back
    DESCRIPTION = "description"


class TicketStatus(StrEnum):
    """Where a ticket stands (`tickets.status`; the IVR's status menu reads it out)."""

    OPEN = "open"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"


class EventKind(StrEnum):
    """Entries of a call's timeline (`events.kind`)."""

    CALL_STARTED = "call_started"
    STEP = "step"
    PROMPT = "prompt"
    INPUT = "input"
    TICKET = "ticket"
    TICKET_LOOKUP = "ticket_lookup"
    STATUS = "status"
    STALE_REQUEST = "stale_request"
    LATE_REQUEST = "late_request"
    FALLBACK = "fallback"
    RECORDING_STATUS = "recording_status"
    RECOGNITION = "recognition"
    OPERATOR_LEG = "operator_leg"  # an operator rung for this queued caller, and how it went
    CALLBACK_REQUESTED = "callback_requested"  # pressed 1 in the queue for a callback
    SMS = "sms"  # the ticket by SMS: requested, sent, delivered or failed
    RECONCILED = "reconciled"  # the final status fetched from Twilio's REST API


class Role(StrEnum):
    """A console account's role."""

    OPERATOR = "operator"
    ADMIN = "admin"  # a supervisor: roster, audit trail, revealing numbers


class AuditAction(StrEnum):
    """What the audit trail records (`audit_log.action`)."""

    SIGN_IN = "sign_in"
    SIGN_OUT = "sign_out"
    VIEW_CALL = "view_call"
    REVEAL_NUMBER = "reveal_number"
    EXPORT_CALLS = "export_calls"
    SEARCH_NUMBERS = "search_numbers"  # an admin's search by more than a number's last four
    TICKET_STATUS = "ticket_status"
    TICKET_NOTE = "ticket_note"
    OPERATOR_ADD = "operator_add"
    OPERATOR_EDIT = "operator_edit"
    OPERATOR_PASSWORD = "operator_password"  # noqa: S105 - an action name, not a secret
    OPERATOR_DEACTIVATE = "operator_deactivate"
    OPERATOR_ACTIVATE = "operator_activate"
    SIGN_IN_UNLOCK = "sign_in_unlock"
    CALLS_PURGE = "calls_purge"
    PRESENCE = "presence"  # an operator set themselves available or away
    CALLBACK = "callback"  # an operator placed a callback to a customer


class Presence(StrEnum):
    """Whether an operator takes queued callers (`operators.presence`); busy is derived."""

    AVAILABLE = "available"
    AWAY = "away"


class LegState(StrEnum):
    """An operator's leg placed through Twilio's REST API (`operator_legs.state`)."""

    RINGING = "ringing"  # reserved for a caller and being placed / ringing
    ANSWERED = "answered"
    ENDED = "ended"


class LegPurpose(StrEnum):
    """Why an operator's phone is rung (`operator_legs.purpose`)."""

    QUEUE = "queue"  # to take a queued caller (<Dial><Queue>)
    CALLBACK = "callback"  # to call a customer back (<Dial><Number>)


class QueueState(StrEnum):
    """A caller's place in the queue (`queue_entries.state`)."""

    WAITING = "waiting"
    BRIDGED = "bridged"
    LEFT = "left"  # pressed 1 for a callback (<Leave>)
    HUNG_UP = "hung_up"
    GONE = "gone"  # left the queue any other way (redirected, error, call ended)


# Twilio's words -------------------------------------------------------------------------
# The values Twilio's documentation gives for the fields the webhooks read; anything else
# is refused (400), so a replay with a shifted or invented field changes nothing.

# CallStatus (the call resource / status callbacks).
CALL_STATUSES = (
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
)
# DialCallStatus (the <Dial> action).
DIAL_CALL_STATUSES = ("completed", "answered", "busy", "no-answer", "failed", "canceled")
# The operator answered and was connected ("answered": connected and the bridge ended).
CONNECTED_DIAL_STATUSES = ("completed", "answered")
# QueueResult (the <Enqueue> action).
QUEUE_RESULTS = (
    "bridged",
    "bridging-in-process",
    "error",
    "hangup",
    "leave",
    "redirected",
    "redirected-from-bridged",
    "queue-full",
    "system-error",
)
# MessageStatus (a message's status callback).
MESSAGE_STATUSES = (
    "accepted",
    "scheduled",
    "canceled",
    "queued",
    "sending",
    "sent",
    "failed",
    "delivered",
    "undelivered",
    "receiving",
    "received",
    "read",
)
# RecordingStatus (recordingStatusCallback).
RECORDING_STATUSES = ("in-progress", "completed", "absent", "failed")


# Every enum the console labels, by the name of its label group in ivr.web.i18n.LABELS.
LABELLED: dict[str, type[StrEnum]] = {
    "line": Line,
    "language": Language,
    "category": Category,
    "step": Step,
    "outcome": Outcome,
    "purpose": RecordingPurpose,
    "ticket_status": TicketStatus,
    "event": EventKind,
    "role": Role,
    "audit": AuditAction,
    "presence": Presence,
}


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The enum's values as plain text, in definition order (for CHECKs, choices, forms)."""
    return tuple(member.value for member in enum)

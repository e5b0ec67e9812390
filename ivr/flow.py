"""The call flow as a pure state machine: (call state, event) -> (next state, reply).

No Flask, Twilio, SQL or speech here. The web layer turns each webhook into an event,
calls `advance`, performs any effect the flow asks for (create a ticket, look one up),
feeds the effect's result back in as another event, and renders the final `Step`.

Retry rule everywhere: a caller gets `MAX_TRIES` tries at a menu; after that the flow
never drops them, it routes them on (to an operator with a ticket, or, after hours, to a
callback ticket).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ivr.tickets import is_valid_ticket_number
from ivr.vocabulary import Category, Language, Line, Outcome, RecordingPurpose, Step, TicketStatus

MAX_TRIES = 3
ORDER_NUMBER_LENGTH = 10
MAX_REPEATS = 3
MAX_SPEECH_TRIES = 2  # after two failed spoken numbers the caller uses the keypad only
MAX_POLLS = 10  # "one moment" waits of about a second for a recognition result

CATEGORY_KEYS = {
    "1": Category.DELIVERY,
    "2": Category.RETURNS,
    "3": Category.PAYMENT,
    "4": Category.QUALITY,
    "5": Category.OTHER,
}

# Steps at which the caller is expected to press keys (each is a <Gather>).
INPUT_STEPS = (
    Step.LANGUAGE,
    Step.MAIN_MENU,
    Step.CLOSED_MENU,
    Step.ORDER_NUMBER,
    Step.CONFIRM_ORDER,
    Step.CATEGORY,
    Step.TICKET_INFO,
    Step.STATUS_TICKET,
    Step.STATUS_VERIFY,
    Step.STATUS_REPORT,
)
# Steps at which the caller may speak (each is a <Record>).
RECORD_STEPS = (Step.ORDER_SPEECH, Step.CONFIRM_SPEECH, Step.DESCRIPTION)
# Steps at which the IVR waits, polling, for a background recognition result.
WAIT_STEPS = (Step.ORDER_WAIT, Step.CONFIRM_WAIT)
# Steps after which the flow waits for Twilio to report how a <Dial>/<Enqueue> ended.
CONNECT_STEPS = (Step.CONNECT, Step.QUEUE)
FINAL_STEP = Step.ENDED


@dataclass(frozen=True)
class CallState:
    """Everything the flow remembers about one call between webhooks."""

    line: str = Line.DOMESTIC
    language: str = Language.RU
    is_open: bool = True
    step: str = Step.START
    failures: int = 0
    order_failures: int = 0
    order_number: str | None = None
    candidate_order: str | None = None
    category: str | None = None
    ticket_number: str | None = None
    operator_name: str | None = None
    operator_endpoint: str | None = None
    operator_busy: bool = False
    queue: str | None = None
    resolution_hours: int | None = None
    callback_at: str | None = None
    repeats: int = 0
    status_ticket: str | None = None
    status_info: dict[str, Any] | None = None
    outcome: str | None = None
    speech_languages: tuple[str, ...] = ()
    speech_failures: int = 0
    candidate_source: str | None = None
    recording: str | None = None
    polls: int = 0
    description_recording: str | None = None
    confirm_listened: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (shallow: every field is a plain value, a tuple or a flat dict).

        Written on every webhook; dataclasses.asdict's deep copy was a tenth of a new
        call's cost (tests/bench/bench_webhook_cost.py).
        """
        return {name: getattr(self, name) for name in _STATE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallState:
        """Rebuild a state saved by `to_dict`, ignoring fields this version doesn't know."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "speech_languages" in values:
            values["speech_languages"] = tuple(values["speech_languages"])
        return cls(**values)

    @property
    def speech_allowed(self) -> bool:
        """Whether the caller may say the order number now."""
        return self.language in self.speech_languages and self.speech_failures < MAX_SPEECH_TRIES


_STATE_FIELDS = tuple(f.name for f in fields(CallState))


# Events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallStarted:
    """Twilio answered a call on this line; `is_open` is decided once, at the start."""

    line: str
    is_open: bool
    speech_languages: tuple[str, ...] = ()


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
    end: str = "wait"  # "wait" (gather/record pending), "poll", "hangup", "dial", "enqueue"
    target: str | None = None
    record: Record | None = None


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


Effect = CreateTicket | LookupTicket
Reply = Turn | Effect


# Presenting steps ----------------------------------------------------------------------


def _spoken_order(number: str) -> dict[str, Any]:
    return {"digits": number}


def present(state: CallState, step: str, before: tuple[Say, ...] = ()) -> Turn:
    """The Turn for `step` in this state, with `before` said first."""
    if step == Step.LANGUAGE:
        return Turn(
            step,
            (
                Say("language_menu", language=Language.RU),
                Say("language_menu", language=Language.EN),
            ),
            Gather(num_digits=1, timeout=5),
        )
    if step == Step.MAIN_MENU:
        return Turn(step, (*before, Say("main_menu")), Gather(num_digits=1))
    if step == Step.CLOSED_MENU:
        return Turn(step, (*before, Say("closed_menu")), Gather(num_digits=1))
    if step == Step.ORDER_NUMBER:
        prompt = "order_prompt_speech" if state.speech_allowed else "order_prompt"
        return Turn(
            step,
            (*before, Say(prompt)),
            Gather(num_digits=ORDER_NUMBER_LENGTH, timeout=6 if state.speech_allowed else 8),
        )
    if step == Step.ORDER_SPEECH:
        return Turn(
            step, before, record=Record(RecordingPurpose.ORDER_NUMBER, max_length=20, timeout=3)
        )
    if step == Step.CONFIRM_SPEECH:
        return Turn(step, before, record=Record(RecordingPurpose.CONFIRM, max_length=4, timeout=2))
    if step == Step.CONFIRM_WAIT:
        return Turn(step, before, end="poll")
    if step == Step.ORDER_WAIT:
        return Turn(step, (*before, Say("one_moment")) if state.polls == 0 else before, end="poll")
    if step == Step.DESCRIPTION:
        return Turn(
            step,
            (*before, Say("description_prompt")),
            record=Record(RecordingPurpose.DESCRIPTION, max_length=60, timeout=5),
        )
    if step == Step.CONFIRM_ORDER:
        key = "order_heard" if state.candidate_source == "speech" else "order_readback"
        readback = Say(key, _spoken_order(state.candidate_order or ""))
        menu = "confirm_menu_speech" if _can_say_yes_no(state) else "confirm_menu"
        return Turn(step, (*before, readback, Say(menu)), Gather(num_digits=1, timeout=4))
    if step == Step.CATEGORY:
        return Turn(step, (*before, Say("category_menu")), Gather(num_digits=1))
    if step == Step.TICKET_INFO:
        return Turn(step, (*before, *_ticket_announcement(state)), Gather(num_digits=1, timeout=4))
    if step == Step.STATUS_TICKET:
        return Turn(step, (*before, Say("status_prompt")), Gather(timeout=10))
    if step == Step.STATUS_VERIFY:
        return Turn(
            step,
            (*before, Say("status_verify")),
            Gather(num_digits=ORDER_NUMBER_LENGTH, timeout=8),
        )
    if step == Step.STATUS_REPORT:
        info = state.status_info or {}
        report = Say(
            "status_report" if info.get("operator_name") else "status_report_unassigned",
            {
                "ticket": state.status_ticket or "",
                "status": info.get("status") or TicketStatus.OPEN,
                "operator": info.get("operator_name") or "",
                "date": info.get("due_date") or "",
            },
        )
        return Turn(step, (*before, report, Say("status_after")), Gather(num_digits=1))
    raise ValueError(f"unknown step: {step}")


def _ticket_announcement(state: CallState) -> tuple[Say, ...]:
    says = [Say("ticket_created", {"ticket": state.ticket_number or ""})]
    if state.operator_name:
        says.append(Say("operator_assigned", {"operator": state.operator_name}))
    else:
        says.append(Say("operator_unassigned"))
    if state.is_open:
        says.append(Say("resolution_time", {"hours": state.resolution_hours or 0}))
    else:
        says.append(Say("callback_time", {"when": state.callback_at or ""}))
    says.append(Say("repeat_offer"))
    return tuple(says)


def _go(state: CallState, step: str, before: tuple[Say, ...] = (), **changes: Any) -> tuple:
    """Move to an input step (resetting the per-step failure count)."""
    new_state = replace(state, step=step, **{"failures": 0, **changes})
    return new_state, present(new_state, step, before)


def _end(state: CallState, says: tuple[Say, ...], outcome: str) -> tuple:
    return (
        replace(state, step=FINAL_STEP, outcome=outcome),
        Turn(FINAL_STEP, (*says, Say("goodbye")), end="hangup"),
    )


def _retry(state: CallState, reason: str) -> tuple:
    """Count a failed try at the current step; re-prompt, or route on after MAX_TRIES."""
    failures = state.failures + 1
    if failures >= MAX_TRIES:
        return _give_up(replace(state, failures=failures))
    new_state = replace(state, failures=failures)
    return new_state, present(new_state, state.step, (Say(reason),))


def _give_up(state: CallState) -> tuple:
    """Too many failed tries at a menu: never a dead end."""
    if state.step == Step.LANGUAGE:
        return _after_language(replace(state, language=Language.RU))
    return _route_to_operator(state, (Say("routing_after_failures"),))


def _route_to_operator(state: CallState, before: tuple[Say, ...] = ()) -> tuple:
    """Create a ticket (with whatever is known) so the caller leaves with one."""
    new_state = replace(state, step=Step.CREATING_TICKET, failures=0)
    effect = CreateTicket(
        order_number=state.order_number,
        category=state.category or Category.OTHER,
        after_hours=not state.is_open,
        related_ticket=state.status_ticket,
        description_recording=state.description_recording,
        before=before,
    )
    return new_state, effect


def _after_language(state: CallState) -> tuple:
    preamble = (Say("greeting"), Say("recording_notice"))
    if state.is_open:
        return _go(state, Step.MAIN_MENU, preamble)
    return _go(state, Step.CLOSED_MENU, (*preamble, Say("closed_info")))


# Transitions ---------------------------------------------------------------------------


def start(
    line: str, is_open: bool, speech_languages: tuple[str, ...] = ()
) -> tuple[CallState, Turn]:
    """The first step of a new call."""
    state = CallState(line=line, is_open=is_open, speech_languages=tuple(speech_languages))
    if line == Line.INTERNATIONAL:
        return _go(state, Step.LANGUAGE)
    return _after_language(state)


def advance(state: CallState, event: Event) -> tuple[CallState, Reply]:
    """The flow's single entry point: what happens when `event` arrives in `state`."""
    if isinstance(event, CallStarted):
        return start(event.line, event.is_open, event.speech_languages)
    if isinstance(event, TicketReady):
        return _on_ticket_ready(state, event)
    if isinstance(event, TicketFound):
        return _on_ticket_found(state, event)
    if isinstance(event, DialEnded):
        return _on_dial_ended(state, event)
    if isinstance(event, QueueEnded):
        return _on_queue_ended(state, event)
    if isinstance(event, TwilioFallback):
        return _route_to_operator(state, (Say("technical_problem"),))
    if isinstance(event, Recorded | NothingRecorded):
        if state.step not in RECORD_STEPS:
            return state, current_step(state)
        return _on_recording(state, event)
    if isinstance(event, SpeechResult):
        if state.step not in WAIT_STEPS:
            return state, current_step(state)
        return _on_speech_result(state, event)
    if isinstance(event, Keys):
        if state.step not in INPUT_STEPS:
            return state, current_step(state)
        return _KEY_HANDLERS[state.step](state, event.digits)
    raise TypeError(f"unknown event: {event!r}")


def run(
    state: CallState, event: Event, perform: Callable[[Effect], Event]
) -> tuple[CallState, Turn]:
    """Advance until the flow has a Turn for the caller, performing effects on the way."""
    preface: tuple[Say, ...] = ()
    state, reply = advance(state, event)
    for _ in range(8):
        if isinstance(reply, Turn):
            return state, replace(reply, say=preface + reply.say)
        preface += reply.before
        state, reply = advance(state, perform(reply))
    raise RuntimeError("the flow asked for effects without end")


def pending_record(state: CallState) -> Record | None:
    """The <Record> the caller is at (its purpose says what the recording is for), if any."""
    return present(state, state.step).record if state.step in RECORD_STEPS else None


def current_step(state: CallState) -> Turn:
    """Re-present where the call is now (for stale or repeated requests)."""
    if state.step in INPUT_STEPS + RECORD_STEPS + WAIT_STEPS:
        return present(state, state.step)
    if state.step in CONNECT_STEPS:
        return _connect(state)[1]
    return Turn(FINAL_STEP, (Say("goodbye"),), end="hangup")


def _menu_key(state: CallState, digits: str, choices: dict[str, Any]) -> tuple | None:
    if not digits:
        return _retry(state, "no_input")
    if digits not in choices:
        return _retry(state, "invalid_key")
    return None


def _on_language(state: CallState, digits: str) -> tuple:
    if not digits:
        return _after_language(replace(state, language=Language.RU))
    if digits == "1":
        return _after_language(replace(state, language=Language.RU))
    if digits == "2":
        return _after_language(replace(state, language=Language.EN))
    return _retry(state, "invalid_key")


def _on_main_menu(state: CallState, digits: str) -> tuple:
    choices = {"1": "order", "2": "status", "0": "operator"}
    failed = _menu_key(state, digits, choices)
    if failed:
        return failed
    if digits == "1":
        return _go(state, Step.ORDER_NUMBER)
    if digits == "2":
        return _go(state, Step.STATUS_TICKET)
    return _route_to_operator(replace(state, category=Category.OTHER))


def _on_closed_menu(state: CallState, digits: str) -> tuple:
    if not digits:
        return _end(state, (), Outcome.CLOSED_NO_REQUEST)
    if digits == "1":
        return _go(state, Step.ORDER_NUMBER)
    if digits == "2":
        return _go(state, Step.STATUS_TICKET)
    return _retry(state, "invalid_key")


def _on_order_number(state: CallState, digits: str) -> tuple:
    if len(digits) == ORDER_NUMBER_LENGTH and digits.isdigit():
        return _go(
            state,
            Step.CONFIRM_ORDER,
            candidate_order=digits,
            candidate_source="keypad",
            confirm_listened=False,
        )
    if not digits and state.speech_allowed:
        # Nothing typed: the caller may be about to speak the number.
        return _go(state, Step.ORDER_SPEECH)
    reason = "no_input" if not digits else "order_invalid"
    return _order_failed(state, reason)


def _can_say_yes_no(state: CallState) -> bool:
    """A caller may answer the read-back with "да"/"нет" once, where speech is available."""
    return state.language in state.speech_languages and not state.confirm_listened


def _on_recording(state: CallState, event: Recorded | NothingRecorded) -> tuple:
    if state.step == Step.CONFIRM_SPEECH:
        if isinstance(event, NothingRecorded):
            return _retry(replace(state, step=Step.CONFIRM_ORDER), "no_input")
        return _go(state, Step.CONFIRM_WAIT, recording=event.recording_sid, polls=0)
    if state.step == Step.DESCRIPTION:
        sid = event.recording_sid if isinstance(event, Recorded) else None
        before = (Say("description_thanks"),) if sid else ()
        return _route_to_operator(replace(state, description_recording=sid), before)
    if isinstance(event, NothingRecorded):
        return _speech_failed(state, "order_not_heard")
    return _go(state, Step.ORDER_WAIT, recording=event.recording_sid, polls=0)


def _on_speech_result(state: CallState, event: SpeechResult) -> tuple:
    if state.step == Step.CONFIRM_WAIT:
        return _on_spoken_answer(state, event)
    if not event.ready:
        if state.polls + 1 >= MAX_POLLS:
            return _speech_failed(state, "order_not_recognised")
        new_state = replace(state, polls=state.polls + 1)
        return new_state, present(new_state, Step.ORDER_WAIT)
    if event.ok and len(event.digits) == ORDER_NUMBER_LENGTH and event.digits.isdigit():
        return _go(
            state,
            Step.CONFIRM_ORDER,
            candidate_order=event.digits,
            candidate_source="speech",
            confirm_listened=False,
        )
    return _speech_failed(state, "order_not_recognised")


def _on_spoken_answer(state: CallState, event: SpeechResult) -> tuple:
    """The caller answered the read-back by voice: "да" = 1, "нет" = 2, anything else = retry."""
    if not event.ready and state.polls + 1 < MAX_POLLS:
        new_state = replace(state, polls=state.polls + 1)
        return new_state, present(new_state, Step.CONFIRM_WAIT)
    back = replace(state, step=Step.CONFIRM_ORDER, recording=None, polls=0)
    if event.ready and event.ok and event.digits in ("1", "2"):
        return _on_confirm_order(back, event.digits)
    return _retry(back, "invalid_answer")


def _speech_failed(state: CallState, reason: str) -> tuple:
    """A spoken number was not usable: count it, then ask again (keypad only after two)."""
    state = replace(state, speech_failures=state.speech_failures + 1, recording=None, polls=0)
    if not state.speech_allowed and state.order_failures + 1 < MAX_TRIES:
        return _order_failed(state, reason, ("order_keypad_only",))
    return _order_failed(state, reason)


def _order_failed(state: CallState, reason: str, extra: tuple[str, ...] = ()) -> tuple:
    failures = state.order_failures + 1
    if failures >= MAX_TRIES:
        return _go(
            state,
            Step.CATEGORY,
            (Say("order_skipped"),),
            order_failures=failures,
            order_number=None,
            candidate_order=None,
        )
    before = (Say(reason), *(Say(key) for key in extra))
    return _go(state, Step.ORDER_NUMBER, before, order_failures=failures)


def _on_confirm_order(state: CallState, digits: str) -> tuple:
    if not digits and _can_say_yes_no(state):
        # Nothing typed: listen once for a spoken "да" / "нет".
        return _go(state, Step.CONFIRM_SPEECH, confirm_listened=True, failures=state.failures)
    failed = _menu_key(state, digits, {"1": True, "2": False})
    if failed:
        return failed
    if digits == "1":
        return _go(state, Step.CATEGORY, order_number=state.candidate_order)
    if state.candidate_source == "speech":
        return _speech_failed(replace(state, candidate_order=None), "order_again")
    return _order_failed(replace(state, candidate_order=None), "order_again")


def _on_category(state: CallState, digits: str) -> tuple:
    failed = _menu_key(state, digits, CATEGORY_KEYS)
    if failed:
        return failed
    state = replace(state, category=CATEGORY_KEYS[digits])
    if state.language in state.speech_languages:
        # Optional: a spoken description, transcribed in the background for the operator.
        return _go(state, Step.DESCRIPTION)
    return _route_to_operator(state)


def _on_ticket_info(state: CallState, digits: str) -> tuple:
    if digits == "*" and state.repeats < MAX_REPEATS:
        new_state = replace(state, repeats=state.repeats + 1)
        return new_state, present(new_state, Step.TICKET_INFO)
    return _connect(state)


def _connect(state: CallState) -> tuple:
    """After the ticket: connect (open), queue (operator busy or none), or say goodbye."""
    if not state.is_open:
        return _end(state, (), Outcome.AFTER_HOURS_CALLBACK)
    if state.operator_endpoint and not state.operator_busy:
        return (
            replace(state, step=Step.CONNECT, outcome=Outcome.CONNECTING),
            Turn(
                Step.CONNECT,
                (Say("connecting", {"operator": state.operator_name or ""}),),
                end="dial",
                target=state.operator_endpoint,
            ),
        )
    return _enqueue(state, Say("operator_busy"))


def _enqueue(state: CallState, reason: Say) -> tuple:
    return (
        replace(state, step=Step.QUEUE, outcome=Outcome.QUEUED),
        Turn(
            Step.QUEUE, (reason,), end="enqueue", target=state.queue or f"support-{state.language}"
        ),
    )


def _on_status_ticket(state: CallState, digits: str) -> tuple:
    if not digits:
        return _retry(state, "no_input")
    if not is_valid_ticket_number(digits):
        return _retry(state, "status_invalid")
    return replace(state, status_ticket=digits), LookupTicket(digits)


def _on_ticket_found(state: CallState, event: TicketFound) -> tuple:
    if not event.found:
        return _retry(replace(state, status_ticket=None), "status_not_found")
    info = {
        "status": event.status,
        "operator_name": event.operator_name,
        "due_date": event.due_date,
        "order_number": event.order_number,
    }
    state = replace(state, status_ticket=event.number, status_info=info)
    if event.caller_matches:
        return _go(state, Step.STATUS_REPORT, outcome=Outcome.STATUS_TOLD)
    if event.order_number:
        return _go(state, Step.STATUS_VERIFY)
    return _route_to_operator(state, (Say("status_cannot_verify"),))


def _on_status_verify(state: CallState, digits: str) -> tuple:
    if not digits:
        return _retry(state, "no_input")
    expected = (state.status_info or {}).get("order_number")
    if digits == expected:
        return _go(state, Step.STATUS_REPORT, outcome=Outcome.STATUS_TOLD)
    return _retry(state, "status_verify_failed")


def _on_status_report(state: CallState, digits: str) -> tuple:
    if not digits:
        return _end(state, (), Outcome.STATUS_TOLD)
    if digits == "1":
        menu = Step.MAIN_MENU if state.is_open else Step.CLOSED_MENU
        return _go(state, menu, status_ticket=None, status_info=None)
    if digits == "0":
        return _route_to_operator(replace(state, category=state.category or Category.OTHER))
    return _retry(state, "invalid_key")


def _on_ticket_ready(state: CallState, event: TicketReady) -> tuple:
    new_state = replace(
        state,
        ticket_number=event.number,
        operator_name=event.operator_name,
        operator_endpoint=event.operator_endpoint,
        operator_busy=event.operator_busy,
        queue=event.queue,
        resolution_hours=event.resolution_hours,
        callback_at=event.callback_at,
        repeats=0,
    )
    return _go(new_state, Step.TICKET_INFO)


def _on_dial_ended(state: CallState, event: DialEnded) -> tuple:
    if event.status == "completed":
        return replace(state, step=FINAL_STEP, outcome=Outcome.CONNECTED), Turn(
            FINAL_STEP, end="hangup"
        )
    return _enqueue(state, Say("operator_unavailable"))


def _on_queue_ended(state: CallState, event: QueueEnded) -> tuple:
    if event.result == "bridged":
        return replace(state, step=FINAL_STEP, outcome=Outcome.CONNECTED), Turn(
            FINAL_STEP, end="hangup"
        )
    if event.result in ("hangup", "leave"):
        return replace(state, step=FINAL_STEP, outcome=Outcome.HUNG_UP_IN_QUEUE), Turn(
            FINAL_STEP, end="hangup"
        )
    return _end(state, (Say("queue_failed"),), Outcome.CALLBACK_AFTER_QUEUE)


_KEY_HANDLERS = {
    Step.LANGUAGE: _on_language,
    Step.MAIN_MENU: _on_main_menu,
    Step.CLOSED_MENU: _on_closed_menu,
    Step.ORDER_NUMBER: _on_order_number,
    Step.CONFIRM_ORDER: _on_confirm_order,
    Step.CATEGORY: _on_category,
    Step.TICKET_INFO: _on_ticket_info,
    Step.STATUS_TICKET: _on_status_ticket,
    Step.STATUS_VERIFY: _on_status_verify,
    Step.STATUS_REPORT: _on_status_report,
}

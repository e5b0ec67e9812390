"""The transitions: (state, event) -> (next state, turn or effect), one handler per step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ivr.flow.messages import (
    CallStarted,
    CreateTicket,
    DialEnded,
    Effect,
    Event,
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
    CALLER_SPEECH_REASONS,
    CATEGORY_KEYS,
    CONNECT_STEPS,
    FINAL_STEP,
    INPUT_STEPS,
    LISTEN_STEPS,
    MAX_POLLS,
    MAX_REPEATS,
    MAX_SPEECH_TRIES,
    MAX_STREAM_POLLS,
    MAX_TRIES,
    MIN_ANSWER_SECONDS,
    ORDER_NUMBER_LENGTH,
    RECORD_STEPS,
    WAIT_STEPS,
    CallState,
)
from ivr.flow.turns import can_say_yes_no, present
from ivr.tickets import is_valid_ticket_number
from ivr.vocabulary import (
    CONNECTED_DIAL_STATUSES,
    Category,
    Language,
    Line,
    Outcome,
    RecordingPurpose,
    Step,
)


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
    line: str, is_open: bool, speech_languages: tuple[str, ...] = (), speech_mode: str = "record"
) -> tuple[CallState, Turn]:
    """The first step of a new call."""
    state = CallState(
        line=line,
        is_open=is_open,
        speech_languages=tuple(speech_languages),
        speech_mode=speech_mode,
    )
    if line == Line.INTERNATIONAL:
        return _go(state, Step.LANGUAGE)
    return _after_language(state)


def advance(state: CallState, event: Event) -> tuple[CallState, Reply]:
    """The flow's single entry point: what happens when `event` arrives in `state`."""
    if isinstance(event, CallStarted):
        return start(event.line, event.is_open, event.speech_languages, event.speech_mode)
    if isinstance(event, TicketReady):
        return _on_ticket_ready(state, event)
    if isinstance(event, TicketFound):
        return _on_ticket_found(state, event)
    if isinstance(event, SmsRequested):
        return _connect(state, (Say("sms_coming" if event.ok else "sms_failed"),))
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
        if state.step not in WAIT_STEPS and not _listening(state):
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


def _listening(state: CallState) -> bool:
    """At a prompt that listens over Media Streams (a spoken result may arrive any time)."""
    return state.streaming and state.recording is not None and state.step in LISTEN_STEPS


def _on_order_number(state: CallState, digits: str) -> tuple:
    if digits:
        state = replace(state, recording=None)  # keys win: a late spoken result is ignored
    if len(digits) == ORDER_NUMBER_LENGTH and digits.isdigit():
        return _go(
            state,
            Step.CONFIRM_ORDER,
            candidate_order=digits,
            candidate_source="keypad",
            confirm_listened=False,
        )
    if not digits and state.speech_allowed and state.streaming:
        # Nothing typed yet: keep listening briefly (the caller may still be speaking).
        return _go(state, Step.ORDER_WAIT, polls=0)
    if not digits and state.speech_allowed:
        # Nothing typed: the caller may be about to speak the number.
        return _go(state, Step.ORDER_SPEECH)
    reason = "no_input" if not digits else "order_invalid"
    return _order_failed(state, reason)


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
    if state.step in (Step.CONFIRM_WAIT, Step.CONFIRM_ORDER):
        return _on_spoken_answer(state, event)
    if not event.ready and state.step == Step.ORDER_NUMBER:
        return state, present(state, state.step)  # still listening: nothing to do yet
    if not event.ready:
        if state.streaming and state.polls + 1 >= MAX_STREAM_POLLS:
            return _speech_failed(state, "order_not_heard")
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
            recording=None,
        )
    if state.streaming and not _caused_by_caller(event.reason):
        # The recogniser failed (worker crashed, servers down): the keypad, at once.
        state = replace(state, speech_failures=max(state.speech_failures, MAX_SPEECH_TRIES - 1))
    return _speech_failed(state, "order_not_recognised")


def _caused_by_caller(reason: str | None) -> bool:
    return any((reason or "").startswith(known) for known in CALLER_SPEECH_REASONS)


def _on_spoken_answer(state: CallState, event: SpeechResult) -> tuple:
    """The caller answered the read-back by voice: "да" = 1, "нет" = 2, anything else = retry."""
    if not event.ready and state.step == Step.CONFIRM_ORDER:
        return state, present(state, state.step)  # still listening: nothing to do yet
    limit = MAX_STREAM_POLLS if state.streaming else MAX_POLLS
    if not event.ready and state.polls + 1 < limit:
        new_state = replace(state, polls=state.polls + 1)
        return new_state, present(new_state, Step.CONFIRM_WAIT)
    back = replace(state, step=Step.CONFIRM_ORDER, recording=None, polls=0)
    if event.ready and event.ok and event.digits in ("1", "2"):
        return _on_confirm_order(back, event.digits)
    return _retry(back, "invalid_answer" if event.ready else "no_input")


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
    if digits:
        state = replace(state, recording=None)  # keys win over a late spoken answer
    if not digits and can_say_yes_no(state) and state.streaming:
        # Nothing typed yet: keep listening briefly for a "да" / "нет" still being said.
        return _go(
            state, Step.CONFIRM_WAIT, confirm_listened=True, polls=0, failures=state.failures
        )
    if not digits and can_say_yes_no(state):
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
    if digits == "1" and state.sms_offer:
        # The ticket by SMS: asked once; the message goes out after this webhook commits.
        return replace(state, sms_offer=False), RequestSms()
    return _connect(state)


def _connect(state: CallState, before: tuple[Say, ...] = ()) -> tuple:
    """After the ticket: connect (open), queue (operator busy or none), or say goodbye."""
    if not state.is_open:
        return _end(state, before, Outcome.AFTER_HOURS_CALLBACK)
    if state.operator_endpoint and not state.operator_busy:
        return (
            replace(state, step=Step.CONNECT, outcome=Outcome.CONNECTING),
            Turn(
                Step.CONNECT,
                (*before, Say("connecting", {"operator": state.operator_name or ""})),
                end="dial",
                target=state.operator_endpoint,
            ),
        )
    return _enqueue(state, Say("operator_busy"), before)


def _enqueue(state: CallState, reason: Say, before: tuple[Say, ...] = ()) -> tuple:
    return (
        replace(state, step=Step.QUEUE, outcome=Outcome.QUEUED),
        Turn(
            Step.QUEUE,
            (*before, reason),
            end="enqueue",
            target=state.queue or f"support-{state.language}",
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
        sms_offer=event.sms_offer,
        repeats=0,
    )
    return _go(new_state, Step.TICKET_INFO)


def _on_dial_ended(state: CallState, event: DialEnded) -> tuple:
    if event.status in CONNECTED_DIAL_STATUSES:
        return _ended(state, Outcome.CONNECTED)
    return _enqueue(state, Say("operator_unavailable"))


# How the caller left the queue (the <Enqueue> page's QueueResult values), on purpose:
QUEUE_CONNECTED = ("bridged", "bridging-in-process", "redirected-from-bridged")


def _on_queue_ended(state: CallState, event: QueueEnded) -> tuple:
    result = event.result
    if result in QUEUE_CONNECTED:
        # Dequeued by an operator's <Dial><Queue> (the action comes after the talk).
        return _ended(state, Outcome.CONNECTED)
    if result == "hangup":
        return _ended(state, Outcome.HUNG_UP_IN_QUEUE)
    if result == "leave":
        # The caller chose a callback while waiting (<Leave> in the wait TwiML).
        return _end(state, (Say("queue_callback"),), Outcome.CALLBACK_AFTER_QUEUE)
    if result == "redirected":
        # Moved out of the queue by a REST call update: the new URL runs the call now.
        return state, Turn(state.step, end="nothing")
    if result in ("error", "system-error") and not state.requeued:
        # Twilio could not hold the call in the queue: try once more before giving up.
        return _enqueue(replace(state, requeued=True), Say("operator_busy"))
    # queue-full, or a second error: the ticket stands and an operator calls back.
    return _end(state, (Say("queue_failed"),), Outcome.CALLBACK_AFTER_QUEUE)


def _ended(state: CallState, outcome: str) -> tuple:
    """The call is over for the IVR (nothing more to say): record how it ended."""
    return replace(state, step=FINAL_STEP, outcome=outcome), Turn(FINAL_STEP, end="hangup")


def recording_heard(purpose: str, duration: str, digits: str) -> bool:
    """Whether a <Record> ended with something said (Twilio's RecordingDuration, Digits).

    Empty (0 s) is nothing; a recording ended by a key ('#', the caller skipping) or by
    hanging up at an order number or a yes/no is nothing when it is too short to hold an
    answer. An unknown duration is taken as something said (recognition decides).
    """
    if not (duration.isascii() and duration.isdigit()):
        return True
    seconds = int(duration)
    if seconds == 0:
        return False
    if digits == "hangup" and purpose != RecordingPurpose.DESCRIPTION:
        return False  # nobody is left to hear the read-back
    return not digits or seconds >= MIN_ANSWER_SECONDS.get(purpose, 1)


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

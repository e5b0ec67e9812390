"""What the caller hears at each step: the Turn the flow presents for a step in a state."""

from __future__ import annotations

from typing import Any

from ivr.flow.messages import Gather, Record, Say, Turn
from ivr.flow.state import ORDER_NUMBER_LENGTH, CallState
from ivr.vocabulary import Language, RecordingPurpose, Step, TicketStatus

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
        if state.speech_allowed and state.streaming:
            # Say it or type it, any time, also while the prompt plays.
            return Turn(
                step,
                (*before, Say("order_prompt_stream")),
                Gather(num_digits=ORDER_NUMBER_LENGTH, timeout=6),
                listen=RecordingPurpose.ORDER_NUMBER,
            )
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
        if state.streaming:  # still listening: the caller may be finishing the number
            return Turn(step, before, end="poll")
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
        menu = "confirm_menu_speech" if can_say_yes_no(state) else "confirm_menu"
        listen = RecordingPurpose.CONFIRM if can_say_yes_no(state) and state.streaming else None
        return Turn(
            step, (*before, readback, Say(menu)), Gather(num_digits=1, timeout=4), listen=listen
        )
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
    if state.sms_offer:
        says.append(Say("sms_offer"))
    says.append(Say("repeat_offer"))
    return tuple(says)


def can_say_yes_no(state: CallState) -> bool:
    """A caller may answer the read-back with "да"/"нет" once, where speech is available."""
    return state.language in state.speech_languages and not state.confirm_listened

"""The call flow, decided without Flask, Twilio or SQL: table tests in milliseconds."""

from dataclasses import replace

import pytest

from ivr import flow
from ivr.flow import CallState, Keys, Turn
from ivr.vocabulary import DIAL_CALL_STATUSES, QUEUE_RESULTS

TICKET = flow.TicketReady(
    number="272401121",
    operator_name="Иванова Мария Сергеевна",
    operator_endpoint="+79990000001",
    operator_busy=False,
    queue="support-ru",
    resolution_hours=24,
)


class Effects:
    """Plays the web layer's part: answers the flow's effects with plain values."""

    def __init__(self, ticket=TICKET, found=None):
        self.ticket, self.found, self.performed = ticket, found, []

    def __call__(self, effect):
        self.performed.append(effect)
        if isinstance(effect, flow.CreateTicket):
            return self.ticket
        return self.found or flow.TicketFound(number=effect.number, found=False)


def walk(line="domestic", is_open=True, keys=(), effects=None):
    """Start a call and feed it keys ("" = time-out); return the final state, step, keys heard."""
    effects = effects or Effects()
    state, step = flow.run(CallState(), flow.CallStarted(line, is_open), effects)
    said = [say.key for say in step.say]
    for key in keys:
        state, step = flow.run(state, Keys(key), effects)
        said += [say.key for say in step.say]
    return state, step, said, effects


@pytest.mark.parametrize(
    "line, is_open, keys, step, end, outcome",
    [
        # Domestic, open: each main menu branch.
        ("domestic", True, [], "main_menu", "wait", None),
        ("domestic", True, ["1", "1234567890", "1", "1", ""], "connect", "dial", "connecting"),
        ("domestic", True, ["1", "1234567890", "1", "5", "7"], "connect", "dial", "connecting"),
        ("domestic", True, ["1", "1234567890", "1", "2", "*"], "ticket_info", "wait", None),
        ("domestic", True, ["0"], "ticket_info", "wait", None),
        ("domestic", True, ["0", ""], "connect", "dial", "connecting"),
        ("domestic", True, ["2"], "status_ticket", "wait", None),
        # Invalid keys and silence: three tries, then an operator with a ticket.
        ("domestic", True, ["9"], "main_menu", "wait", None),
        ("domestic", True, ["", ""], "main_menu", "wait", None),
        ("domestic", True, ["9", "", "#"], "ticket_info", "wait", None),
        ("domestic", True, ["1", "1234567890", "7", "8", "9"], "ticket_info", "wait", None),
        ("domestic", True, ["1", "1234567890", "1", "6", "", "x"], "ticket_info", "wait", None),
        # Order number: too short, too long, star, empty -> ask again; third failure -> go on.
        ("domestic", True, ["1", "12345"], "order_number", "wait", None),
        ("domestic", True, ["1", "12345678901"], "order_number", "wait", None),
        ("domestic", True, ["1", "12345*7890"], "order_number", "wait", None),
        ("domestic", True, ["1", "", "123", "1*"], "category", "wait", None),
        ("domestic", True, ["1", "1234567890", "2"], "order_number", "wait", None),
        ("domestic", True, ["1", "1234567890", "2", "1111111111", "1"], "category", "wait", None),
        # International line: language first.
        ("international", True, [], "language", "wait", None),
        ("international", True, ["1"], "main_menu", "wait", None),
        ("international", True, ["2"], "main_menu", "wait", None),
        ("international", True, [""], "main_menu", "wait", None),
        ("international", True, ["7", "8", "9"], "main_menu", "wait", None),
        # Closed: hours, alternatives, callback request or goodbye.
        ("domestic", False, [], "closed_menu", "wait", None),
        ("domestic", False, [""], "ended", "hangup", "closed_no_request"),
        ("domestic", False, ["1", "1234567890", "1", "1"], "ticket_info", "wait", None),
        (
            "domestic",
            False,
            ["1", "1234567890", "1", "1", ""],
            "ended",
            "hangup",
            "after_hours_callback",
        ),
        ("domestic", False, ["3", "4", "5"], "ticket_info", "wait", None),
        ("international", False, ["2", "1"], "order_number", "wait", None),
    ],
)
def test_call_tree(line, is_open, keys, step, end, outcome):
    state, reply, _, _ = walk(line, is_open, keys)
    assert (reply.name, reply.end, state.outcome) == (step, end, outcome)
    assert state.step == step


def test_domestic_call_greets_and_announces_recording_before_the_menu():
    _, step, said, _ = walk()
    assert said == ["greeting", "recording_notice", "main_menu"]
    assert step.gather.num_digits == 1


def test_international_language_menu_is_bilingual_and_english_is_kept():
    _, step, _, _ = walk("international")
    assert [say.language for say in step.say] == ["ru", "en"]
    state, _, said, _ = walk("international", keys=["2"])
    assert state.language == "en"
    assert said[-3:] == ["greeting", "recording_notice", "main_menu"]


def test_closed_line_says_hours_and_alternatives_first():
    _, _, said, _ = walk(is_open=False)
    assert said == ["greeting", "recording_notice", "closed_info", "closed_menu"]


def test_order_number_is_read_back_before_confirmation():
    state, step, _, _ = walk(keys=["1", "4207315890"])
    assert step.say[0] == flow.Say("order_readback", {"digits": "4207315890"})
    assert state.candidate_order == "4207315890" and state.order_number is None


def test_order_gather_takes_exactly_ten_digits_with_pound_to_finish():
    _, step, _, _ = walk(keys=["1"])
    assert (step.gather.num_digits, step.gather.finish_on_key) == (10, "#")


def test_three_failed_order_numbers_go_on_without_one():
    state, step, said, _ = walk(keys=["1", "1", "22", "333"])
    assert said[-2:] == ["order_skipped", "category_menu"]
    assert state.order_number is None and step.name == "category"


def test_ticket_gets_order_category_and_after_hours_flag():
    state, _, _, effects = walk(is_open=False, keys=["1", "4207315890", "1", "2"])
    assert effects.performed == [
        flow.CreateTicket(order_number="4207315890", category="returns", after_hours=True)
    ]
    assert state.ticket_number == TICKET.number


def test_ticket_announcement_has_number_operator_time_and_repeat():
    _, step, _, _ = walk(keys=["1", "4207315890", "1", "1"])
    assert [say.key for say in step.say] == [
        "ticket_created",
        "operator_assigned",
        "resolution_time",
        "repeat_offer",
    ]
    assert step.say[0].params == {"ticket": TICKET.number}


def test_star_repeats_at_most_three_times_then_connects():
    state, step, said, _ = walk(keys=["0", "*", "*", "*"])
    assert said.count("ticket_created") == 4 and step.name == "ticket_info"
    state, step = flow.run(state, Keys("*"), Effects())
    assert step.end == "dial"


def test_operator_now_without_order_number():
    state, _, _, effects = walk(keys=["0"])
    assert effects.performed[0].order_number is None
    assert effects.performed[0].category == "other"


def test_empty_roster_still_gives_a_ticket_and_queues():
    ticket = replace(TICKET, operator_name=None, operator_endpoint=None)
    state, step, said, _ = walk(keys=["0", ""], effects=Effects(ticket))
    assert "operator_unassigned" in said
    assert (step.end, step.target) == ("enqueue", "support-ru")


def test_busy_operator_queues_the_caller():
    ticket = replace(TICKET, operator_busy=True, queue="operator-1")
    _, step, _, _ = walk(keys=["0", ""], effects=Effects(ticket))
    assert (step.end, step.target) == ("enqueue", "operator-1")


@pytest.mark.parametrize(
    "dial_status, step, outcome",
    [
        # Every DialCallStatus the <Dial> page documents.
        ("completed", "ended", "connected"),
        ("answered", "ended", "connected"),  # answered and connected: not queued again
        ("no-answer", "queue", "queued"),
        ("busy", "queue", "queued"),
        ("failed", "queue", "queued"),
        ("canceled", "queue", "queued"),
    ],
)
def test_dial_result(dial_status, step, outcome):
    state, _, _, _ = walk(keys=["0", ""])
    state, reply = flow.run(state, flow.DialEnded(dial_status), Effects())
    assert (reply.name, state.outcome) == (step, outcome)


def test_every_documented_dial_status_is_in_the_table():
    assert set(DIAL_CALL_STATUSES) == {
        "completed",
        "answered",
        "busy",
        "no-answer",
        "failed",
        "canceled",
    }


# Every QueueResult the <Enqueue> page documents: (outcome, what the caller hears, end).
QUEUE_TABLE = {
    "bridged": ("connected", None, "hangup"),
    "bridging-in-process": ("connected", None, "hangup"),
    "redirected-from-bridged": ("connected", None, "hangup"),
    "hangup": ("hung_up_in_queue", None, "hangup"),
    "leave": ("callback_after_queue", "queue_callback", "hangup"),
    "queue-full": ("callback_after_queue", "queue_failed", "hangup"),
    "error": ("queued", "operator_busy", "enqueue"),  # once more, then a callback
    "system-error": ("queued", "operator_busy", "enqueue"),
    "redirected": ("queued", None, "nothing"),  # a REST update runs the call now
}


def test_the_queue_table_covers_every_documented_result():
    assert set(QUEUE_TABLE) == set(QUEUE_RESULTS)


@pytest.mark.parametrize("result", sorted(QUEUE_TABLE))
def test_queue_result(result):
    outcome, prompt, end = QUEUE_TABLE[result]
    state, _, _, _ = walk(keys=["0", ""], effects=Effects(replace(TICKET, operator_busy=True)))
    state, reply = flow.run(state, flow.QueueEnded(result), Effects())
    assert (state.outcome, reply.end) == (outcome, end)
    keys = [say.key for say in reply.say]
    assert (prompt in keys) if prompt else not any(k.startswith("queue_") for k in keys)


@pytest.mark.parametrize("result", ["error", "system-error"])
def test_a_second_queue_error_gives_up_with_a_callback(result):
    state, _, _, _ = walk(keys=["0", ""], effects=Effects(replace(TICKET, operator_busy=True)))
    state, reply = flow.run(state, flow.QueueEnded(result), Effects())
    assert reply.end == "enqueue" and state.requeued
    state, reply = flow.run(state, flow.QueueEnded(result), Effects())
    assert (state.outcome, reply.end) == ("callback_after_queue", "hangup")
    assert "queue_failed" in [say.key for say in reply.say]


@pytest.mark.parametrize(
    "purpose, duration, digits, heard",
    [
        ("order_number", "0", "", False),  # silence: saved with duration 0
        ("order_number", "0", "#", False),
        ("order_number", "1", "#", False),  # '#' at once: nothing said
        ("order_number", "4", "#", True),  # said the number, then '#'
        ("order_number", "1", "", True),  # ended by silence: recognition decides
        ("order_number", "5", "hangup", False),  # nobody left to hear a read-back
        ("confirm", "1", "#", True),
        ("confirm", "0", "", False),
        ("description", "1", "#", False),  # skipped with '#'
        ("description", "3", "#", True),  # described, then '#'
        ("description", "6", "hangup", True),  # described, then hung up: kept
        ("description", "", "", True),  # no duration given: taken as said
    ],
)
def test_what_a_record_ended_by_a_key_or_silence_holds(purpose, duration, digits, heard):
    assert flow.recording_heard(purpose, duration, digits) is heard


FOUND = flow.TicketFound(
    number="272401121",
    found=True,
    caller_matches=False,
    order_number="4207315890",
    status="in_progress",
    operator_name="Петров Алексей Николаевич",
    due_date="2026-11-27",
)


@pytest.mark.parametrize(
    "found, keys, step, said_last",
    [
        (replace(FOUND, caller_matches=True), ["2", "272401121"], "status_report", "status_after"),
        (FOUND, ["2", "272401121"], "status_verify", "status_verify"),
        (FOUND, ["2", "272401121", "4207315890"], "status_report", "status_after"),
        (FOUND, ["2", "272401121", "1111111111"], "status_verify", "status_verify"),
        (FOUND, ["2", "272401121", "1", "2", "3"], "ticket_info", "repeat_offer"),
        (None, ["2", "272401121"], "status_ticket", "status_prompt"),
        (FOUND, ["2", "272401122"], "status_ticket", "status_prompt"),  # bad check digit
        (FOUND, ["2", ""], "status_ticket", "status_prompt"),
        (replace(FOUND, order_number=None), ["2", "272401121"], "ticket_info", "repeat_offer"),
    ],
)
def test_ticket_status(found, keys, step, said_last):
    state, reply, said, _ = walk(keys=keys, effects=Effects(found=found))
    assert reply.name == step
    assert said[-1] == said_last


def test_status_is_told_only_after_verification():
    _, step, said, _ = walk(keys=["2", "272401121"], effects=Effects(found=FOUND))
    assert "status_report" not in said
    _, step, said, _ = walk(keys=["2", "272401121", "4207315890"], effects=Effects(found=FOUND))
    report = next(say for say in step.say if say.key == "status_report")
    assert report.params == {
        "ticket": "272401121",
        "status": "in_progress",
        "operator": "Петров Алексей Николаевич",
        "date": "2026-11-27",
    }


def test_mistyped_ticket_is_refused_without_a_lookup():
    _, _, said, effects = walk(keys=["2", "272401122"], effects=Effects(found=FOUND))
    assert said[-2:] == ["status_invalid", "status_prompt"]
    assert effects.performed == []


def test_after_status_the_caller_can_go_back_or_leave():
    found = replace(FOUND, caller_matches=True)
    _, step, _, _ = walk(keys=["2", "272401121", "1"], effects=Effects(found=found))
    assert step.name == "main_menu"
    state, step, _, _ = walk(keys=["2", "272401121", ""], effects=Effects(found=found))
    assert (step.end, state.outcome) == ("hangup", "status_told")


def test_fallback_routes_to_an_operator_with_a_ticket_and_apologises():
    state, _, _, _ = walk(keys=["1"])
    state, step = flow.run(state, flow.TwilioFallback(), Effects())
    assert step.say[0].key == "technical_problem"
    assert step.name == "ticket_info" and state.ticket_number == TICKET.number


def test_keys_at_a_step_that_takes_none_repeat_the_step():
    state, _, _, _ = walk(keys=["0", ""])
    again, step = flow.run(state, Keys("5"), Effects())
    assert again == state and step.end == "dial"


def test_state_round_trips_through_dict_and_ignores_unknown_fields():
    state, _, _, _ = walk(keys=["1", "4207315890"])
    data = state.to_dict() | {"field_from_the_future": 1}
    assert CallState.from_dict(data) == state


def test_every_input_step_can_be_presented():
    state = replace(CallState(), candidate_order="4207315890", ticket_number="272401121")
    for name in flow.INPUT_STEPS:
        step = flow.present(state, name)
        assert isinstance(step, Turn) and step.gather is not None and step.say


SPEECH = ("ru", "en")


def speech_walk(keys_and_events):
    """Walk a call where speech is available, feeding keys and speech events."""
    effects = Effects()
    state, step = flow.run(CallState(), flow.CallStarted("domestic", True, SPEECH), effects)
    for item in keys_and_events:
        event = Keys(item) if isinstance(item, str) else item
        state, step = flow.run(state, event, effects)
    return state, step


@pytest.mark.parametrize(
    "events, step, end",
    [
        (["1"], "order_number", "wait"),
        (["1", ""], "order_speech", "wait"),
        (["1", "", flow.Recorded("RE1")], "order_wait", "poll"),
        (["1", "", flow.Recorded("RE1"), flow.SpeechResult(False)], "order_wait", "poll"),
        (
            ["1", "", flow.Recorded("RE1"), flow.SpeechResult(True, True, "4207315890")],
            "confirm_order",
            "wait",
        ),
        (
            ["1", "", flow.Recorded("RE1"), flow.SpeechResult(True, False, "", "no_speech")],
            "order_number",
            "wait",
        ),
        (["1", "", flow.NothingRecorded()], "order_number", "wait"),
        (
            ["1", "", flow.Recorded("RE1"), flow.SpeechResult(True, True, "4207315890"), ""],
            "confirm_speech",
            "wait",
        ),
        (
            [
                "1",
                "",
                flow.Recorded("RE1"),
                flow.SpeechResult(True, True, "4207315890"),
                "",
                flow.Recorded("RE2"),
                flow.SpeechResult(True, True, "1"),
            ],
            "category",
            "wait",
        ),
        (["1", "4207315890", "1", "1"], "description", "wait"),
        (["1", "4207315890", "1", "1", flow.NothingRecorded()], "ticket_info", "wait"),
        (["1", "4207315890", "1", "1", flow.Recorded("RE3")], "ticket_info", "wait"),
    ],
)
def test_speech_steps(events, step, end):
    state, reply = speech_walk(events)
    assert (reply.name, reply.end) == (step, end)


def test_polling_is_bounded():
    events = ["1", "", flow.Recorded("RE1")] + [flow.SpeechResult(False)] * flow.MAX_POLLS
    state, step = speech_walk(events)
    assert step.name == "order_number" and state.order_failures == 1


def test_two_speech_failures_then_keypad_only():
    failed = flow.SpeechResult(True, False, "", "no_speech")
    state, step = speech_walk(
        ["1", "", flow.Recorded("R1"), failed, "", flow.Recorded("R2"), failed]
    )
    assert not state.speech_allowed
    assert [say.key for say in step.say][-2:] == ["order_keypad_only", "order_prompt"]
    state, step = flow.run(state, Keys(""), Effects())
    assert step.name == "category"  # third failure in all: on without an order number


def test_description_recording_goes_on_the_ticket_effect():
    effects = Effects()
    state, _ = flow.run(CallState(), flow.CallStarted("domestic", True, SPEECH), effects)
    for key in ["1", "4207315890", "1", "3"]:
        state, _ = flow.run(state, Keys(key), effects)
    flow.run(state, flow.Recorded("REdesc"), effects)
    assert effects.performed[-1].description_recording == "REdesc"

"""The dispatcher's pure decisions: which operator to ring, the estimated wait, back-off,
leg ids, the line's number; and the timings they use. No IO."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from ivr.operators import Operator
from ivr.vocabulary import Line

# One worker places a reserved leg (or sends an SMS); after a crash another may try once
# this has passed.
PLACING_LEASE = timedelta(seconds=10)
# Waits between retries of a failed REST request (then the last one again).
BACKOFF_SECONDS = (1, 2, 4, 8, 15, 30)
# The estimated wait counts callers answered in this window.
SPEED_OF_ANSWER_WINDOW = timedelta(minutes=30)


def pick_operator(
    language: str,
    preferred_id: int | None,
    free: Iterable[Operator],
    tried: dict[int, int],
    languages_on_shift: set[str],
) -> Operator | None:
    """The operator to ring for a caller, or None.

    Speakers of the caller's language only (anyone free when nobody on shift speaks it);
    operators not yet rung in vain for this caller first, then the ticket's own operator,
    then the fewest open tickets, then the lowest id.
    """
    candidates = [operator for operator in free if language in operator.languages]
    if not candidates and language not in languages_on_shift:
        candidates = list(free)
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda op: (tried.get(op.id, 0), op.id != preferred_id, op.open_tickets, op.id),
    )


def estimate_wait_minutes(
    position: int, speed_of_answer: float | None, serving: int, waited: float
) -> int | None:
    """Whole minutes a caller at `position` may still wait, or None with no recent answers.

    The recent average speed of answer is what the next caller waits; every `serving`
    callers ahead add one more of it.
    """
    if speed_of_answer is None:
        return None
    turns = 1 + (position - 1) / max(1, serving)
    seconds = max(30.0, speed_of_answer * turns - waited)
    return max(1, round(seconds / 60))


def backoff(attempt: int) -> timedelta:
    """The wait before retry number `attempt` (1 = the first retry)."""
    return timedelta(seconds=BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS)) - 1])


def new_leg_sid() -> str:
    """Our id of an operator's leg (Twilio's CallSid comes later): 'LG' + 32 hex digits."""
    return "LG" + secrets.token_hex(16)


LEG_SID_PATTERN = r"LG[0-9a-f]{32}"


def line_number(settings: Any, call: dict[str, Any] | None) -> str:
    """The number callers reached (if an E.164 number), else the line's main number."""
    if call and (call.get("to_number") or "").startswith("+"):
        return call["to_number"]
    if call and call.get("line") == Line.INTERNATIONAL:
        return settings.international_number
    return settings.domestic_number

"""The phones the REST stand-in rings: how each number behaves (answer, decline, keys, SMS)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# The Message resource's final statuses a destination can end in.
MESSAGE_OUTCOMES = ("delivered", "undelivered", "failed")


@dataclass
class Phone:
    """How one number's phone behaves when the stand-in rings it (seconds are scaled by
    the stand-in's `time_scale`)."""

    answer_after: float = 1.0
    decline: bool = False  # rejects the call: busy
    no_answer: bool = False  # rings until the caller gives up: no-answer
    fail: bool = False  # cannot be reached: failed
    talk_seconds: float = 30.0  # hangs up this long after answering
    press: str = ""  # keys typed at each <Gather> (e.g. "1" to accept a whisper)
    message_status: str = "delivered"  # how an SMS to this number ends

    def __post_init__(self) -> None:
        if self.message_status not in MESSAGE_OUTCOMES:
            raise ValueError(
                f"message_status must be one of {', '.join(MESSAGE_OUTCOMES)}, "
                f"got {self.message_status!r}"
            )
        if self.answer_after < 0 or self.talk_seconds < 0:
            raise ValueError("answer_after and talk_seconds cannot be negative")
        if any(key not in "0123456789*#" for key in self.press):
            raise ValueError(f"press takes keys 0-9 * #, got {self.press!r}")


PHONE_KEYS = frozenset(item.name for item in fields(Phone))


def phone_from(raw: dict[str, Any], where: str = "phone") -> Phone:
    """A Phone from a scenario's table; unknown keys and bad values are refused."""
    unknown = set(raw) - PHONE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        return Phone(**raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None

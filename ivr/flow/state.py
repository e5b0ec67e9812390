"""What the flow remembers about a call between webhooks, and the rules' numbers."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ivr.vocabulary import Category, Language, Line, RecordingPurpose, Step

MAX_TRIES = 3
ORDER_NUMBER_LENGTH = 10
MAX_REPEATS = 3
MAX_SPEECH_TRIES = 2  # after two failed spoken numbers the caller uses the keypad only
MAX_POLLS = 10  # "one moment" waits of about a second for a recognition result
# Stream mode: after the <Gather> timed out with nothing typed, seconds (one poll each) the
# IVR keeps listening for a spoken answer still being said before the keypad prompt.
MAX_STREAM_POLLS = 3
# Why a streamed utterance failed that the caller caused (another try may work); any other
# reason is the recogniser's (worker crashed, servers down...): keypad at once.
CALLER_SPEECH_REASONS = ("no_speech", "no_match", "silence", "not_yes_or_no", "not_an_order_number")
# The shortest recording that can hold an answer, by purpose: a spoken order number takes
# several seconds, a "да" about one. A recording ended by a key (the caller pressed '#')
# that is shorter holds no answer: "nothing said", at once, without waiting for recognition.
MIN_ANSWER_SECONDS = {
    RecordingPurpose.ORDER_NUMBER: 2,
    RecordingPurpose.CONFIRM: 1,
    RecordingPurpose.DESCRIPTION: 2,
}

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
# Stream mode: keypad steps at which the caller may also speak (a <Start><Stream> runs).
LISTEN_STEPS = (Step.ORDER_NUMBER, Step.CONFIRM_ORDER)
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
    requeued: bool = False  # put back in the queue once after a queue error
    sms_offer: bool = False  # "press 1 for the ticket by SMS" is said at the ticket step
    speech_mode: str = "record"  # "stream" (Media Streams) or "record" (<Record>)

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
    def streaming(self) -> bool:
        """Whether speech comes over Media Streams at the prompt (else a <Record> after it)."""
        return self.speech_mode == "stream"

    @property
    def speech_allowed(self) -> bool:
        """Whether the caller may say the order number now."""
        return self.language in self.speech_languages and self.speech_failures < MAX_SPEECH_TRIES


_STATE_FIELDS = tuple(f.name for f in fields(CallState))

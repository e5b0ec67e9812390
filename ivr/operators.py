"""The operator roster: shifts, languages, and who takes the next ticket."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time

from ivr.hours import in_moscow
from ivr.vocabulary import Language, values

ENDPOINT_PATTERN = re.compile(
    r"^(\+[1-9]\d{6,14}|sip:[^\s<>\"']{3,200}|client:[A-Za-z0-9_.@-]{1,100})$"
)
SHIFT_PATTERN = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")


@dataclass(frozen=True)
class Operator:
    """One operator as assignment sees them."""

    id: int
    full_name: str
    languages: frozenset[str]
    endpoint: str
    shift_start: time
    shift_end: time
    open_tickets: int = 0
    name_en: str | None = None

    def spoken_name(self, language: str) -> str:
        """The name as the caller hears it (a Latin spelling for English callers if known)."""
        return self.name_en if language == Language.EN and self.name_en else self.full_name


def operator_from_row(row: dict) -> Operator:
    """Build an Operator from a roster row."""
    return Operator(
        id=row["id"],
        full_name=row["full_name"],
        languages=frozenset(parse_languages(row["languages"])),
        endpoint=row["endpoint"],
        shift_start=time.fromisoformat(row["shift_start"]),
        shift_end=time.fromisoformat(row["shift_end"]) if row["shift_end"] != "24:00" else time.max,
        open_tickets=row.get("open_tickets") or 0,
        name_en=row.get("name_en"),
    )


def parse_languages(text: str) -> list[str]:
    """'ru, en' -> ['ru', 'en']; only languages the IVR speaks."""
    languages = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [language for language in languages if language not in values(Language)]
    if unknown or not languages:
        raise ValueError(f"languages must be ru and/or en, got {text!r}")
    return languages


def parse_shift(text: str) -> tuple[str, str]:
    """'08:00-20:00' -> ('08:00', '20:00'); a shift may run past midnight ('20:00-08:00')."""
    if not SHIFT_PATTERN.match(text.strip()):
        raise ValueError(f"shift must look like 08:00-20:00, got {text!r}")
    start, end = text.strip().split("-")
    if start == end:
        raise ValueError("a shift cannot start and end at the same time")
    return start, end


def validate_endpoint(text: str) -> str:
    """An operator is reached at +E.164 number, sip:URI or client:identity."""
    if not ENDPOINT_PATTERN.match(text.strip()):
        raise ValueError(
            f"endpoint must be a +E.164 number, sip:user@host or client:name, got {text!r}"
        )
    return text.strip()


def on_shift(operator: Operator, instant: datetime) -> bool:
    """Whether the operator works at this instant (shift times are Moscow time)."""
    now = in_moscow(instant).time()
    if operator.shift_start < operator.shift_end:
        return operator.shift_start <= now < operator.shift_end
    return now >= operator.shift_start or now < operator.shift_end


def choose_operator(
    roster: Iterable[Operator], language: str, instant: datetime
) -> Operator | None:
    """On shift at `instant`, speaking the language, fewest open tickets (then lowest id).

    Nobody on shift speaks the language -> anyone on shift; nobody on shift -> None.
    """
    working = [operator for operator in roster if on_shift(operator, instant)]
    speakers = [operator for operator in working if language in operator.languages]
    candidates = speakers or working
    if not candidates:
        return None
    return min(candidates, key=lambda operator: (operator.open_tickets, operator.id))

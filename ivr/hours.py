"""Opening hours in Moscow time, holidays, and the clock the service reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MOSCOW = ZoneInfo("Europe/Moscow")


@dataclass(frozen=True)
class OpeningHours:
    """Daily opening hours in Moscow time: open from `opens` (inclusive) to `closes` (exclusive)."""

    opens: time = time(8, 0)
    closes: time = time(20, 0)
    holidays: frozenset[date] = frozenset()


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant that names its offset (or Z); naive times are refused."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 instant: {text!r}") from None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"instant must include an offset such as +03:00 or Z: {text!r}")
    return instant


def in_moscow(instant: datetime) -> datetime:
    """The same instant on Moscow's wall clock."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: an instant needs a time zone")
    return instant.astimezone(MOSCOW)


def is_open(instant: datetime, hours: OpeningHours) -> bool:
    """Whether the hotline is open at this instant."""
    local = in_moscow(instant)
    if local.date() in hours.holidays:
        return False
    return hours.opens <= local.time().replace(tzinfo=None) < hours.closes


def next_opening(instant: datetime, hours: OpeningHours) -> datetime:
    """The first opening time strictly after `instant` (Moscow time)."""
    local = in_moscow(instant)
    day = local.date()
    for _ in range(400):
        opening = datetime.combine(day, hours.opens, tzinfo=MOSCOW)
        if opening > local and day not in hours.holidays:
            return opening
        day += timedelta(days=1)
    raise ValueError("no opening day within a year: check the holidays")


class Clock:
    """Tells the time: the real clock, or a fixed instant (IVR_NOW) for demos and tests."""

    def __init__(self, fixed: datetime | None = None, source: Callable[[], datetime] | None = None):
        self._fixed = fixed
        self._source = source or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        """The current instant, time-zone aware."""
        return self._fixed if self._fixed is not None else self._source()

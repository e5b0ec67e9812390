from datetime import date, datetime, time

import pytest

from ivr.hours import Clock, OpeningHours, in_moscow, is_open, next_opening, parse_instant

HOURS = OpeningHours()


@pytest.mark.parametrize(
    "instant, expected",
    [
        ("2026-11-26T07:59:59+03:00", False),
        ("2026-11-26T08:00:00+03:00", True),
        ("2026-11-26T08:00:00.000001+03:00", True),
        ("2026-11-26T12:00:00+03:00", True),
        ("2026-11-26T19:59:59+03:00", True),
        ("2026-11-26T19:59:59.999999+03:00", True),
        ("2026-11-26T20:00:00+03:00", False),
        ("2026-11-26T23:59:59+03:00", False),
        ("2026-11-26T00:00:00+03:00", False),
        # The same boundaries given in other offsets.
        ("2026-11-26T04:59:59Z", False),
        ("2026-11-26T05:00:00Z", True),
        ("2026-11-26T16:59:59Z", True),
        ("2026-11-26T17:00:00Z", False),
        ("2026-11-26T05:00:00+00:00", True),
        ("2026-11-26T00:00:00-05:00", True),  # 08:00:00 Moscow, given in New York time
        ("2026-11-25T23:59:59-05:00", False),  # 07:59:59 Moscow
        ("2026-11-26T11:59:59-05:00", True),  # 19:59:59 Moscow
        ("2026-11-26T12:00:00-05:00", False),  # 20:00:00 Moscow
        ("2026-11-26T14:30:00+09:00", True),  # Tokyo 14:30 = Moscow 08:30
        ("2026-11-26T14:00:00+09:00", True),  # exactly 08:00 Moscow
        ("2026-11-26T13:59:59+09:00", False),
        ("2026-07-01T07:59:59+03:00", False),  # no daylight saving in summer
        ("2026-07-01T08:00:00+03:00", True),
    ],
)
def test_is_open_at_the_boundaries(instant, expected):
    assert is_open(parse_instant(instant), HOURS) is expected


def test_holidays_are_closed_all_day():
    hours = OpeningHours(holidays=frozenset({date(2027, 1, 1)}))
    assert not is_open(parse_instant("2027-01-01T12:00:00+03:00"), hours)
    assert is_open(parse_instant("2027-01-02T12:00:00+03:00"), hours)


@pytest.mark.parametrize(
    "instant, expected",
    [
        ("2026-11-26T21:30:00+03:00", "2026-11-27T08:00:00+03:00"),
        ("2026-11-26T03:00:00+03:00", "2026-11-26T08:00:00+03:00"),
        ("2026-11-26T07:59:59+03:00", "2026-11-26T08:00:00+03:00"),
        ("2026-11-26T08:00:00+03:00", "2026-11-27T08:00:00+03:00"),
        ("2026-11-26T20:00:00+03:00", "2026-11-27T08:00:00+03:00"),
        ("2026-11-26T22:00:00Z", "2026-11-27T08:00:00+03:00"),  # 01:00 Moscow on the 27th
    ],
)
def test_next_opening(instant, expected):
    assert next_opening(parse_instant(instant), HOURS) == parse_instant(expected)


def test_next_opening_skips_holidays():
    hours = OpeningHours(holidays=frozenset({date(2026, 12, 31), date(2027, 1, 1)}))
    opening = next_opening(parse_instant("2026-12-30T21:00:00+03:00"), hours)
    assert opening == parse_instant("2027-01-02T08:00:00+03:00")


@pytest.mark.parametrize(
    "text", ["2026-11-26T12:00:00", "tomorrow", "", "2026-13-01T00:00:00+03:00"]
)
def test_parse_instant_refuses_naive_or_bad_text(text):
    with pytest.raises(ValueError):
        parse_instant(text)


def test_in_moscow_refuses_naive_datetimes():
    with pytest.raises(ValueError):
        in_moscow(datetime(2026, 11, 26, 12))


def test_custom_hours():
    hours = OpeningHours(opens=time(9), closes=time(18))
    assert not is_open(parse_instant("2026-11-26T08:30:00+03:00"), hours)
    assert is_open(parse_instant("2026-11-26T09:00:00+03:00"), hours)
    assert not is_open(parse_instant("2026-11-26T18:00:00+03:00"), hours)


def test_clock_fixed_and_real():
    fixed = parse_instant("2026-11-26T12:00:00+03:00")
    assert Clock(fixed).now() == fixed
    assert Clock().now().tzinfo is not None

from datetime import time

import pytest

from ivr.hours import parse_instant
from ivr.operators import (
    Operator,
    choose_operator,
    on_shift,
    parse_languages,
    parse_shift,
    validate_endpoint,
)


def op(id, languages="ru", start="08:00", end="20:00", open_tickets=0):
    return Operator(
        id=id,
        full_name=f"Оператор {id}",
        languages=frozenset(languages.split(",")),
        endpoint=f"client:op{id}",
        shift_start=time.fromisoformat(start),
        shift_end=time.fromisoformat(end),
        open_tickets=open_tickets,
    )


NOON = parse_instant("2026-11-26T12:00:00+03:00")
NIGHT = parse_instant("2026-11-26T23:00:00+03:00")


@pytest.mark.parametrize(
    "roster, language, instant, expected",
    [
        ([op(1, open_tickets=3), op(2, open_tickets=1)], "ru", NOON, 2),
        ([op(1, open_tickets=1), op(2, open_tickets=1)], "ru", NOON, 1),  # tie: lowest id
        ([op(1, "ru", open_tickets=0), op(2, "ru,en", open_tickets=5)], "en", NOON, 2),
        ([op(1, "ru"), op(2, "ru")], "en", NOON, 1),  # nobody speaks English: anyone on shift
        ([op(1, start="08:00", end="12:00"), op(2, start="12:00", end="20:00")], "ru", NOON, 2),
        ([op(1), op(2, start="20:00", end="08:00")], "ru", NIGHT, 2),  # overnight shift
        ([op(1), op(2)], "ru", NIGHT, None),
        ([], "ru", NOON, None),
    ],
)
def test_choose_operator(roster, language, instant, expected):
    chosen = choose_operator(roster, language, instant)
    assert (chosen.id if chosen else None) == expected


@pytest.mark.parametrize(
    "start, end, instant, expected",
    [
        ("08:00", "20:00", "2026-11-26T08:00:00+03:00", True),
        ("08:00", "20:00", "2026-11-26T19:59:59+03:00", True),
        ("08:00", "20:00", "2026-11-26T20:00:00+03:00", False),
        ("08:00", "20:00", "2026-11-26T05:00:00Z", True),
        ("20:00", "08:00", "2026-11-26T02:00:00+03:00", True),
        ("20:00", "08:00", "2026-11-26T08:00:00+03:00", False),
    ],
)
def test_on_shift(start, end, instant, expected):
    assert on_shift(op(1, start=start, end=end), parse_instant(instant)) is expected


@pytest.mark.parametrize("text", ["", "de", "ru,xx", ","])
def test_bad_languages(text):
    with pytest.raises(ValueError):
        parse_languages(text)


@pytest.mark.parametrize("text", ["8-20", "08:00", "25:00-26:00", "08:00-08:00", "ab:cd-ef:gh"])
def test_bad_shifts(text):
    with pytest.raises(ValueError):
        parse_shift(text)


@pytest.mark.parametrize("text", ["+79990000001", "sip:ivanova@pbx.example.ru", "client:ivanova"])
def test_good_endpoints(text):
    assert validate_endpoint(text) == text


@pytest.mark.parametrize("text", ["89990000001", "http://evil", "sip:<x>", "client:", ""])
def test_bad_endpoints(text):
    with pytest.raises(ValueError):
        validate_endpoint(text)

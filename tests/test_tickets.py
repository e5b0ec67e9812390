import random

import pytest

from ivr.tickets import (
    TICKET_LENGTH,
    group_digits,
    is_valid_ticket_number,
    may_change_ticket,
    new_ticket_number,
    verhoeff_check_digit,
)


@pytest.mark.parametrize(
    "body, check",
    [
        ("236", "3"),
        ("12345", "1"),
        ("142857", "0"),
        ("123456789012", "0"),
        ("8473643095483728456789", "2"),
    ],
)
def test_verhoeff_known_values(body, check):
    assert verhoeff_check_digit(body) == check


def test_new_numbers_are_valid_and_well_formed():
    for _ in range(2000):
        number = new_ticket_number()
        assert len(number) == TICKET_LENGTH
        assert number.isdigit() and number[0] != "0"
        assert is_valid_ticket_number(number)


def _sample_numbers(count=300):
    rng = random.Random(7)
    return [new_ticket_number(rng.randrange) for _ in range(count)]


def test_every_single_digit_error_is_caught():
    for number in _sample_numbers():
        for position in range(TICKET_LENGTH):
            for digit in "0123456789":
                if digit != number[position]:
                    typo = number[:position] + digit + number[position + 1 :]
                    assert not is_valid_ticket_number(typo), (number, typo)


def test_every_adjacent_swap_is_caught():
    for number in _sample_numbers():
        for position in range(TICKET_LENGTH - 1):
            a, b = number[position], number[position + 1]
            if a != b:
                swapped = number[:position] + b + a + number[position + 2 :]
                assert not is_valid_ticket_number(swapped), (number, swapped)


def test_numbers_are_not_sequential():
    numbers = [int(new_ticket_number()) for _ in range(200)]
    assert len(set(numbers)) == len(numbers)
    steps = {b - a for a, b in zip(numbers, numbers[1:], strict=False)}
    assert len(steps) > 150  # no fixed stride to guess the next ticket from


@pytest.mark.parametrize(
    "text",
    ["", "12345678", "1234567890", "abcdefghi", "１２３４５６７８９", "012345678", " 23456789"],
)
def test_malformed_numbers_are_invalid(text):
    assert not is_valid_ticket_number(text)


@pytest.mark.parametrize(
    "number, groups",
    [
        ("123456789", ["123", "456", "789"]),
        ("1234567890", ["123", "456", "7890"]),
        ("12", ["12"]),
        ("1234", ["1234"]),  # never a lone last digit
    ],
)
def test_group_digits(number, groups):
    assert group_digits(number) == groups


def test_check_digit_refuses_non_digits():
    with pytest.raises(ValueError):
        verhoeff_check_digit("12a")


@pytest.mark.parametrize(
    ("role", "ticket_operator", "allowed"),
    [
        ("operator", 7, True),  # their own
        ("operator", None, True),  # nobody's yet
        ("operator", 8, False),  # another operator's
        ("admin", 8, True),
        ("admin", None, True),
        ("admin", 7, True),
    ],
)
def test_who_may_change_a_ticket(role, ticket_operator, allowed):
    assert may_change_ticket(role, 7, ticket_operator) is allowed

"""Ticket numbers: nine keypad digits, the last a Verhoeff check digit, drawn at random."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from ivr.vocabulary import Role

TICKET_LENGTH = 9
TICKET_STATUSES = ("open", "in_progress", "resolved")

# Verhoeff's tables: multiplication in the dihedral group D5, a permutation, its inverse.
_MULTIPLY = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_PERMUTE = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_INVERSE = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def _verhoeff_state(digits: str, offset: int) -> int:
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _MULTIPLY[check][_PERMUTE[(position + offset) % 8][int(digit)]]
    return check


def verhoeff_check_digit(digits: str) -> str:
    """The Verhoeff check digit to append to `digits`."""
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"digits only, got {digits!r}")
    return str(_INVERSE[_verhoeff_state(digits, 1)])


def is_valid_ticket_number(text: str) -> bool:
    """Whether `text` is a well-formed ticket number with a correct check digit."""
    return (
        len(text) == TICKET_LENGTH
        and text.isascii()
        and text.isdigit()
        and text[0] != "0"
        and _verhoeff_state(text, 0) == 0
    )


def new_ticket_number(random_below: Callable[[int], int] = secrets.randbelow) -> str:
    """A fresh ticket number: a non-zero lead, random digits, then the check digit."""
    body = str(1 + random_below(9)) + "".join(
        str(random_below(10)) for _ in range(TICKET_LENGTH - 2)
    )
    return body + verhoeff_check_digit(body)


def group_digits(digits: str, sizes: tuple[int, ...] | None = None) -> list[str]:
    """Split digits into groups for reading back: given sizes, else threes (no group of one)."""
    if sizes is None:
        groups = [digits[start : start + 3] for start in range(0, len(digits), 3)]
        if len(groups) > 1 and len(groups[-1]) == 1:
            groups[-2:] = [groups[-2] + groups[-1]]
        return groups
    if any(size < 1 for size in sizes):
        raise ValueError(f"group sizes must be positive, got {sizes}")
    groups = []
    start = 0
    for size in sizes:
        if start >= len(digits):
            break
        groups.append(digits[start : start + size])
        start += size
    if start < len(digits):
        groups.append(digits[start:])
    return groups


def may_change_ticket(role: str, operator_id: int, ticket_operator_id: int | None) -> bool:
    """Admins change any ticket; operators their own and those with no operator yet."""
    return role == Role.ADMIN or ticket_operator_id in (None, operator_id)

"""Demo data: the operator roster that `make run`, `ivr call` and `ivr simulate` start with."""

from __future__ import annotations

from datetime import UTC, datetime

from ivr import db as database

DEMO_ROSTER = (
    {
        "full_name": "Иванова Мария Сергеевна",
        "name_en": "Maria Ivanova",
        "login": "ivanova",
        "role": "admin",
        "languages": "ru,en",
        "endpoint": "+79990000001",
        "shift_start": "08:00",
        "shift_end": "20:00",
    },
    {
        "full_name": "Петров Алексей Николаевич",
        "name_en": "Alexey Petrov",
        "login": "petrov",
        "role": "operator",
        "languages": "ru",
        "endpoint": "sip:petrov@pbx.example.ru",
        "shift_start": "08:00",
        "shift_end": "20:00",
    },
    {
        "full_name": "Смирнова Ольга Викторовна",
        "name_en": "Olga Smirnova",
        "login": "smirnova",
        "role": "operator",
        "languages": "ru,en",
        "endpoint": "client:smirnova",
        "shift_start": "08:00",
        "shift_end": "20:00",
    },
)


def seed_demo_roster(db) -> int:
    """Add the demo operators if the roster is empty; returns how many were added."""
    if database.list_operators(db):
        return 0
    created = database.timestamp(datetime.now(UTC))
    with database.write_transaction(db):
        for operator in DEMO_ROSTER:
            database.insert_operator(db, {**operator, "created_at": created})
    return len(DEMO_ROSTER)

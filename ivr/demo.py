"""Demo data: the operator roster that `make run`, `ivr call` and `ivr simulate` start with."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from ivr import db as database
from ivr.accounts import hash_password
from ivr.db import operators as roster_store

DEMO_ACCOUNTS_HEADER = (
    "# Demo console accounts (login, password, role), made by `ivr init-db --demo`.\n"
    "# Only the hashes are in the database; keep this file private or delete it.\n"
)

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


def seed_demo_roster(db, credentials_file: str | Path | None = None) -> int:
    """Add the demo operators if the roster is empty; returns how many were added.

    With `credentials_file`, demo accounts that have no password yet get a random one: the
    database keeps only its hash, the file (mode 600) the plain login/password pairs.
    """
    added = 0
    if not roster_store.list_operators(db):
        created = database.timestamp(datetime.now(UTC))
        with database.write_transaction(db):
            for operator in DEMO_ROSTER:
                roster_store.insert_operator(db, {**operator, "created_at": created})
        added = len(DEMO_ROSTER)
    if credentials_file is not None:
        give_demo_passwords(db, Path(credentials_file))
    return added


def give_demo_passwords(db, credentials_file: Path) -> dict[str, str]:
    """Random passwords for demo accounts without one; returns {login: password} set now."""
    chosen: dict[str, str] = {}
    roles: dict[str, str] = {}
    for demo in DEMO_ROSTER:
        operator = roster_store.operator_by_login(db, demo["login"])
        if operator is not None and not operator["password_hash"]:
            chosen[demo["login"]] = secrets.token_urlsafe(9)
            roles[demo["login"]] = operator["role"]
    if not chosen:
        return {}
    kept = [
        line
        for line in read_demo_accounts(credentials_file)
        if line.split("\t", 1)[0] not in chosen
    ]
    lines = kept + [f"{login}\t{password}\t{roles[login]}" for login, password in chosen.items()]
    credentials_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(DEMO_ACCOUNTS_HEADER + "".join(line + "\n" for line in lines))
    credentials_file.chmod(0o600)
    hashes = {login: hash_password(password) for login, password in chosen.items()}
    with database.write_transaction(db):
        for login, password_hash in hashes.items():
            operator = roster_store.operator_by_login(db, login)
            roster_store.set_operator_password(db, operator["id"], password_hash)
    return chosen


def read_demo_accounts(credentials_file: Path) -> list[str]:
    """The account lines (login TAB password TAB role) of a demo credentials file."""
    if not credentials_file.exists():
        return []
    return [
        line
        for line in credentials_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

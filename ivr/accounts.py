"""Console accounts: password hashing, login rules and sign-in throttling (no Flask here)."""

from __future__ import annotations

import math
import re
import secrets
from datetime import datetime, timedelta
from functools import cache

from werkzeug.security import check_password_hash, generate_password_hash

PASSWORD_METHOD = "scrypt"  # noqa: S105 - a KDF name; werkzeug: n=2**15, r=8, p=1, 16-byte salt
LOGIN_PATTERN = re.compile(r"^[a-z0-9._-]{2,40}\Z")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256

# Sign-in throttling: this many failures in the window lock a login from one address (or an
# address, or a login from addresses it never signed in from) until the window has passed
# since the latest failure. Counting per login *and* address means a stranger's guesses
# lock the stranger out, not the operator at their own desk.
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_LOGIN = 5  # one login from one address
MAX_FAILURES_PER_ADDRESS = 20  # any logins from one address
MAX_FAILURES_PER_LOGIN_FROM_NEW_ADDRESSES = 50  # one login, guessed from many addresses
KNOWN_ADDRESS_AGE = timedelta(days=30)  # a success from an address keeps it "known" this long


def hash_password(password: str) -> str:
    """A salted scrypt hash of the password, as stored in operators.password_hash."""
    return generate_password_hash(password, method=PASSWORD_METHOD)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches; spends the same time when there is no hash to check."""
    if not password_hash:
        check_password_hash(_dummy_hash(), password)
        return False
    return check_password_hash(password_hash, password)


@cache
def _dummy_hash() -> str:
    """Checked when a login is unknown or has no password, so that takes as long as a real check."""
    return generate_password_hash(secrets.token_hex(16), method=PASSWORD_METHOD)


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable (a message key), or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return "password_too_short"
    if len(password) > MAX_PASSWORD_LENGTH:
        return "password_too_long"
    return None


def normalise_login(text: str) -> str:
    """A console login as stored: trimmed, lower case; ValueError if it breaks the rules."""
    login = text.strip().lower()
    if not LOGIN_PATTERN.match(login):
        raise ValueError("a login has 2-40 characters: a-z, 0-9, dot, hyphen, underscore")
    return login


def sign_in_wait(failures: dict[str, tuple[int, str | None]], now: datetime) -> int:
    """Minutes until another sign-in may be tried, from ivr.db.audit.sign_in_failures."""
    limits = {
        "login_and_address": MAX_FAILURES_PER_LOGIN,
        "address": MAX_FAILURES_PER_ADDRESS,
        "login_from_new_addresses": MAX_FAILURES_PER_LOGIN_FROM_NEW_ADDRESSES,
    }
    return throttle_minutes([(*failures[name], limit) for name, limit in limits.items()], now)


def throttle_minutes(failures: list[tuple[int, str | None, int]], now: datetime) -> int:
    """Minutes until another sign-in may be tried, from (count, latest failure, limit) checks."""
    wait = timedelta(0)
    for count, latest, limit in failures:
        if count >= limit and latest:
            wait = max(wait, datetime.fromisoformat(latest) + THROTTLE_WINDOW - now)
    return math.ceil(wait.total_seconds() / 60) if wait > timedelta(0) else 0

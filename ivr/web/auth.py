"""Console sessions: the session secret, cookie flags, CSRF (passwords: ivr.accounts).

The signed cookie carries the language, the CSRF token and a session id; whether that id
still names a live session is decided server-side (ivr.db.sessions), so a session can end
before its cookie does.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, Request, session
from flask.sessions import SecureCookieSessionInterface, SessionMixin

from ivr.config import Settings
from ivr.db.core import make_private_folder

log = logging.getLogger("ivr.console")

SECRET_KEY_FILE = "secret-key"  # noqa: S105 - a file name
SESSION_LIFETIME = timedelta(hours=12)  # one shift; absolute: use does not extend it


def instance_dir(settings: Settings) -> Path:
    """The folder of instance files: the database's folder (instance/ by default)."""
    if settings.db_path in ("", ":memory:") or settings.db_path.startswith("file:"):
        return Path("instance")
    return Path(settings.db_path).parent


def load_or_create_secret_key(folder: Path) -> str:
    """The key in folder/secret-key, created once (random, mode 600) if it is not there."""
    path = folder / SECRET_KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    make_private_folder(folder)
    key = secrets.token_hex(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _read_key(path)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    path.chmod(0o600)
    log.warning(
        "generated a random console secret key (set IVR_SECRET_KEY to choose one)",
        extra={"path": str(path)},
    )
    return key


def _read_key(path: Path) -> str:
    key = path.read_text().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds a key too short to sign sessions; delete it to renew")
    return key


def configure_sessions(app: Flask, settings: Settings) -> None:
    """Secret key and cookie flags for the console's signed session cookie."""
    app.config["SECRET_KEY"] = settings.secret_key or load_or_create_secret_key(
        instance_dir(settings)
    )
    app.config.update(
        SESSION_COOKIE_NAME="ivr_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.lower().startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # A cookie is only sent again when the session changes, not renewed on every use.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.session_interface = ConsoleSessions()


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building the signer for a request with no cookie.

    Flask builds the cookie's signer (a key derivation) for every request before it looks
    for the cookie; Twilio's webhooks never carry one (the cookie's path is /console), so
    each webhook paid for a signer it never used. A request without the cookie gets the
    same empty session Flask would give it.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ  # no cookie at all: nothing to parse
            or not request.cookies.get(self.get_cookie_name(app))
        ):
            return self.session_class()
        return super().open_session(app, request)


def csrf_token() -> str:
    """This session's CSRF token (made on first use); every console form posts it back."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_valid(submitted: str | None) -> bool:
    """Whether a submitted token is this session's token (constant-time comparison)."""
    expected = session.get("csrf")
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())

"""What every console page shares: the blueprint, access control, request arguments, audit.

Every page needs a signed-in operator; the roster and the audit trail need an admin. Every
form that changes something carries the session's CSRF token. `audited` makes a change and
its audit row in one transaction.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from ivr import db as database
from ivr.config import CATEGORIES
from ivr.db import audit as audit_store
from ivr.db import sessions as session_store
from ivr.hours import MOSCOW
from ivr.logs import mask_phone
from ivr.vocabulary import AuditAction, Line, Outcome, Role, TicketStatus, values
from ivr.web import auth
from ivr.web.console.formatting import (
    event_lines,
    format_confidence,
    format_duration,
    format_moscow,
    label,
    t,
)
from ivr.web.context import desk, get_db, settings, wall_clock
from ivr.web.i18n import normalise_language

log = logging.getLogger("ivr.console")

bp = Blueprint("console", __name__.rsplit(".", 1)[0], url_prefix="/console")

PAGE_SIZE = 50
# Lists count matches this far and then say "10 000+"; their pages reach as far (older calls
# are found by narrowing the dates), so no page costs more than counting 10 000 rows.
COUNT_LIMIT = 10_000
MAX_PAGE = COUNT_LIMIT // PAGE_SIZE
MAX_AUDIT_PAGE = 100_000  # the audit trail has no filters: every page of it stays reachable
MAX_ID = 2**31 - 1  # the largest operator id an argument may name
MAX_SEARCH_LENGTH = 100
LINES = values(Line)
OUTCOMES = values(Outcome)
TICKET_STATUSES = values(TicketStatus)
PUBLIC_ENDPOINTS = ("console.login", "console.set_language")
NUMERIC_SEARCH = re.compile(r"^[\d\s()+.\-]+$")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# Clocks and the audit trail --------------------------------------------------------------


def service_now() -> datetime:
    """The service's "now" (IVR_NOW in demos and tests): what "today" and "live" mean."""
    return desk().clock.now()


def wall_now() -> datetime:
    """The real time, for security records (sign-ins, audit, notes, sessions)."""
    return wall_clock().now()


def session_idle_limit() -> timedelta:
    """How long a console session may go unused (IVR_SESSION_IDLE_MINUTES)."""
    return timedelta(minutes=settings().session_idle_minutes)


def start_operator_session(db: database.Database, operator_id: int, now: datetime) -> None:
    """Give this browser a new server-side session of the operator (and a new CSRF token)."""
    language = session.get("lang")
    session.clear()  # no fixation: nothing of the session before survives but the language
    session.permanent = True
    session["sid"] = session_store.start_session(
        db, operator_id, now, auth.SESSION_LIFETIME, session_idle_limit()
    )
    if language:
        session["lang"] = language
    auth.csrf_token()  # made now, so pages that show it do not send the cookie again


@dataclass
class Change:
    """A change under way: its connection, its instant, the audit row's target and detail."""

    db: database.Database
    now: datetime
    target: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@contextmanager
def audited(
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    operator_id: int | None = None,
) -> Iterator[Change]:
    """Make a change and its audit row in one write transaction (both or neither).

    The row names the signed-in operator unless `operator_id` says who (a sign-in).
    """
    db = get_db()
    change = Change(db, wall_now(), target, dict(detail or {}))
    if operator_id is None and g.get("operator"):
        operator_id = g.operator["id"]
    with database.write_transaction(db):
        yield change
        audit_store.add_audit(db, change.now, operator_id, action, change.target, change.detail)


# Request arguments -----------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """Only a path inside the console may be the place to go back to (no open redirect)."""
    if (
        target
        and target.startswith("/console")
        and not target.startswith("//")
        and "\\" not in target
        and all(32 < ord(char) < 127 for char in target)
    ):
        return target
    return url_for("console.dashboard")


def number_arg(name: str, low: int, high: int, default: int | None = None) -> int | None:
    """The one parser of numeric query arguments: ASCII digits within [low, high].

    Absent or empty gives `default`; anything else ('²', '-1', 5000 digits, out of range)
    answers 400. (str.isdigit() alone lets superscripts through, which int() then refuses,
    and Python refuses to convert strings of more than 4300 digits.)
    """
    text = request.args.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(high)) + 2):
        abort(400)
    value = int(text)
    if not low <= value <= high:
        abort(400)
    return value


def page_arg(maximum: int = MAX_PAGE) -> int:
    """The page asked for: 1 when absent; 400 unless 1..maximum."""
    return number_arg("page", 1, maximum, default=1)


def pager(page: int, total: int, limit: int | None = None) -> dict[str, Any]:
    """Where a page is among the pages of a list; `total` past `limit` reads "10 000+"."""
    capped = limit is not None and total > limit
    pages = max(1, math.ceil((limit if capped else total) / PAGE_SIZE))
    return {
        "page": page,
        "pages": pages,
        "pages_text": f"{pages}+" if capped else str(pages),
        "total": total,
        "total_text": f"{limit:,}+".replace(",", " ") if capped else str(total),
        "capped": capped,
        "has_prev": page > 1,
        "has_next": page < pages,
        "last": page >= pages,
    }


def filter_args(names: tuple[str, ...]) -> dict[str, str]:
    """The filter arguments in use, to rebuild links (pages, CSV) with the same filters."""
    return {name: request.args[name] for name in names if request.args.get(name)}


def moscow_day_start(day: date) -> datetime:
    """Midnight of a Moscow day."""
    return datetime.combine(day, time(0), tzinfo=MOSCOW)


def day_arg(name: str) -> date | None:
    """A YYYY-MM-DD argument, or None."""
    text = request.args.get(name)
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def is_admin() -> bool:
    """Whether the signed-in operator is an admin (a supervisor)."""
    return bool(g.get("operator") and g.operator["role"] == Role.ADMIN)


def audit_number_search(list_name: str, digits: str | None) -> None:
    """An admin's search by more than the last four digits may match part of a caller's
    number: the audit trail keeps that it happened, with the number masked."""
    if digits and len(digits) > 4 and is_admin():
        detail = {"list": list_name, "query": mask_phone(digits), "digits": len(digits)}
        with audited(AuditAction.SEARCH_NUMBERS, None, detail):
            pass


def audited_filters(names: tuple[str, ...]) -> dict[str, str]:
    """The filter arguments for an audit row: a number searched for is masked."""
    found = filter_args(names)
    digits, _ = search_arg()
    if digits:
        found["q"] = mask_phone(digits)
    return found


def search_arg() -> tuple[str | None, str | None]:
    """The search box's text -> (digits, words): '420-731-5890' is digits, anything else words."""
    text = request.args.get("q", "").strip()[:MAX_SEARCH_LENGTH]
    if not text:
        return None, None
    if NUMERIC_SEARCH.match(text):
        digits = re.sub(r"\D", "", text)
        return (digits or None), None
    return None, text


def choice_arg(name: str, choices: tuple[str, ...]) -> str | None:
    """An argument that must be one of `choices`, or None."""
    value = request.args.get(name)
    return value if value in choices else None


def operator_arg() -> int | None:
    """The operator filter: "mine" means the signed-in operator."""
    return g.operator["id"] if request.args.get("mine") else number_arg("operator", 1, MAX_ID)


# Access control --------------------------------------------------------------------------


def _signed_in_operator() -> dict[str, Any] | None:
    """The operator of this browser's session, if the session is still live server-side."""
    session_id = session.get("sid")
    if not isinstance(session_id, str):
        return None
    operator = session_store.session_operator(
        get_db(), session_id, wall_now(), session_idle_limit()
    )
    if operator is None:
        session.pop("sid", None)
    return operator


@bp.before_request
def _guard():
    g.lang = normalise_language(session.get("lang"))
    g.operator = _signed_in_operator()
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        submitted = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not auth.csrf_valid(submitted):
            log.warning(
                "console request refused: missing or wrong CSRF token",
                extra={"path": request.path, "remote_addr": request.remote_addr},
            )
            return render_template("console/error.html", message=t("csrf_failed")), 400
    if g.operator is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.endpoint == "console.live_json":
            return jsonify({"error": "sign in"}), 401
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    return None


@bp.after_request
def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def admin_required(view: Callable) -> Callable:
    """Only admins (supervisors) may use this view."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        if g.operator["role"] != Role.ADMIN:
            return render_template("console/error.html", message=t("forbidden")), 403
        return view(*args, **kwargs)

    return wrapped


@bp.errorhandler(400)
def _bad_request(_error):
    return render_template("console/error.html", message=t("bad_request")), 400


@bp.errorhandler(404)
def _not_found(_error):
    return render_template("console/error.html", message=t("not_found")), 404


# Templates -------------------------------------------------------------------------------


@bp.app_template_filter("msk")
def _msk_filter(value: str | None, style: str = "datetime") -> str:
    return format_moscow(value, style)


@bp.app_template_filter("duration")
def _duration_filter(value: float | int | None) -> str:
    return format_duration(value)


@bp.app_template_filter("masked")
def _masked_filter(value: str | None) -> str:
    return mask_phone(value) or "—"


@bp.app_template_filter("confidence")
def _confidence_filter(value: float | None) -> str:
    return format_confidence(value)


@bp.app_context_processor
def _template_helpers() -> dict[str, Any]:
    if request.blueprint != "console":
        return {}
    return {
        "t": t,
        "label": label,
        "lang": g.get("lang", "ru"),
        "me": g.get("operator"),
        "is_admin": bool(g.get("operator") and g.operator["role"] == Role.ADMIN),
        "csrf_token": auth.csrf_token,
        "event_lines": event_lines,
        "CATEGORIES": CATEGORIES,
        "LINES": LINES,
        "OUTCOMES": OUTCOMES,
        "TICKET_STATUSES": TICKET_STATUSES,
    }

"""The operator console at /console: sign-in, call log, live calls, tickets, roster, dashboard.

Every page needs a signed-in operator; the roster and the audit trail need an admin. Every
form that changes something carries the session's CSRF token. Caller numbers show as their
last four digits; an admin may reveal one, and that, viewing a call, changing a ticket and
changing the roster land in the audit trail.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import wraps
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    session,
    stream_with_context,
    url_for,
)

from ivr import db as database
from ivr import get_db
from ivr.cli import CALL_FIELDS, call_record
from ivr.config import CATEGORIES, Settings
from ivr.hours import MOSCOW, in_moscow
from ivr.logs import mask_phone
from ivr.operators import parse_languages, parse_shift, validate_endpoint
from ivr.tickets import TICKET_STATUSES
from ivr.web import auth
from ivr.web.charts import Donut, horizontal_bars, stacked_columns
from ivr.web.i18n import LABELS, LANGUAGES, label, normalise_language, translate

log = logging.getLogger("ivr.console")

bp = Blueprint("console", __name__, url_prefix="/console")

PAGE_SIZE = 50
MAX_PAGE = 100_000
CSV_MAX_ROWS = 200_000
LIVE_WINDOW = timedelta(hours=4)  # a call silent this long without an end is not "live"
SPEECH_WINDOW = timedelta(days=7)
MAX_NOTE_LENGTH = 4000
MAX_SEARCH_LENGTH = 100
LINES = ("domestic", "international")
OUTCOMES = tuple(LABELS["en"]["outcome"])
REACHED_OPERATOR = ("connected", "queued")
PUBLIC_ENDPOINTS = ("console.login", "console.set_language")
NUMERIC_SEARCH = re.compile(r"^[\d\s()+.\-]+$")
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PHONE_LIKE = re.compile(r"^\+?[\d\s()-]+$")
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}
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


# Helpers ---------------------------------------------------------------------------------


def _settings() -> Settings:
    return current_app.extensions["ivr.settings"]


def _service_now() -> datetime:
    """The service's "now" (IVR_NOW in demos and tests): what "today" and "live" mean."""
    return current_app.extensions["ivr.clock"].now()


def _wall_now() -> datetime:
    """The real time, for security records (sign-ins, audit, notes, status changes)."""
    return datetime.now(UTC)


def t(key: str, **params: object) -> str:
    """A message in the signed-in operator's language."""
    return translate(g.get("lang", "ru"), key, **params)


def _label(group: str, value: object) -> str:
    return label(g.get("lang", "ru"), group, value)


def _audit(action: str, target: str | None = None, detail: dict[str, Any] | None = None) -> None:
    operator = g.get("operator")
    db = get_db()
    with database.write_transaction(db):
        database.add_audit(
            db, _wall_now(), operator["id"] if operator else None, action, target, detail
        )


def _safe_next(target: str | None) -> str:
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


def _page() -> int:
    text = request.args.get("page", "1")
    return min(int(text), MAX_PAGE) if text.isdigit() and int(text) > 0 else 1


def _pager(page: int, total: int) -> dict[str, Any]:
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return {
        "page": page,
        "pages": pages,
        "total": total,
        "has_prev": page > 1,
        "has_next": page < pages,
    }


def _filter_args(names: tuple[str, ...]) -> dict[str, str]:
    """The filter arguments in use, to rebuild links (pages, CSV) with the same filters."""
    return {name: request.args[name] for name in names if request.args.get(name)}


def _moscow_day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=MOSCOW)


def _parse_day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _split_search(text: str) -> tuple[str | None, str | None]:
    """A search box's text -> (digits, words): '420-731-5890' is digits, anything else words."""
    text = text.strip()[:MAX_SEARCH_LENGTH]
    if not text:
        return None, None
    if NUMERIC_SEARCH.match(text):
        digits = re.sub(r"\D", "", text)
        return (digits or None), None
    return None, text


def _int_arg(name: str) -> int | None:
    text = request.args.get(name, "")
    return int(text) if text.isdigit() and len(text) < 10 else None


def _choice_arg(name: str, choices: tuple[str, ...]) -> str | None:
    value = request.args.get(name)
    return value if value in choices else None


def format_moscow(value: str | None, style: str = "datetime") -> str:
    """A stored instant as Moscow wall-clock text: 26.11.2026 12:00:05."""
    if not value:
        return "—"
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
        local = in_moscow(instant if instant.tzinfo else instant.replace(tzinfo=UTC))
    except ValueError:
        return value
    pattern = {"date": "%d.%m.%Y", "time": "%H:%M:%S", "short": "%d.%m %H:%M"}.get(
        style, "%d.%m.%Y %H:%M:%S"
    )
    return local.strftime(pattern)


def format_duration(seconds: float | int | None) -> str:
    """Seconds as m:ss (or h:mm:ss)."""
    if seconds is None or seconds == "":
        return "—"
    total = int(round(float(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_confidence(value: float | None) -> str:
    """0.934 -> 93%."""
    return "—" if value is None else f"{round(float(value) * 100)}%"


def event_lines(event: dict[str, Any]) -> list[str]:
    """A timeline entry's details as short lines of plain text (escaped when rendered)."""
    detail = event.get("detail")
    kind = event.get("kind")
    if not isinstance(detail, dict):
        return [str(detail)] if detail not in (None, "") else []
    if kind == "prompt":
        return [f"«{text}»" for text in detail.get("texts", [])]
    if kind == "step":
        parts = [_label("step", detail.get("step"))]
        if detail.get("end"):
            parts.append(
                f"→ {detail['end']}" + (f" {detail['target']}" if detail.get("target") else "")
            )
        return [" ".join(parts)]
    if kind == "call_started":
        state = t("line_open") if detail.get("open") else t("line_closed")
        return [f"{_label('line', detail.get('line'))} · {detail.get('to', '')} · {state}"]
    if kind == "ticket" and detail.get("ticket_number"):
        parts = [f"№ {detail['ticket_number']}", detail.get("operator_name") or t("unassigned")]
        parts.append(_label("category", detail.get("category")))
        if detail.get("order_number"):
            parts.append(f"{t('col_order')} {detail['order_number']}")
        if detail.get("after_hours"):
            parts.append(t("callback_at"))
        return [" · ".join(parts)]
    if kind == "status" and set(detail) <= {"status", "duration"}:
        duration = detail.get("duration")
        suffix = f" · {format_duration(duration)}" if str(duration or "").isdigit() else ""
        return [f"{detail.get('status')}{suffix}"]
    if kind == "input" and set(detail) <= {"digits", "invalid"}:
        digits = detail.get("digits", "")
        shown = f"{t('pressed')}: {digits}" if digits else t("silence")
        return [shown + (f" ({t('invalid_keys')})" if detail.get("invalid") else "")]
    lines = []
    for key, value in detail.items():
        if value is None or value == "":
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {value}")
    return lines


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
        "label": _label,
        "lang": g.get("lang", "ru"),
        "me": g.get("operator"),
        "is_admin": bool(g.get("operator") and g.operator["role"] == "admin"),
        "csrf_token": auth.csrf_token,
        "event_lines": event_lines,
        "CATEGORIES": CATEGORIES,
        "LINES": LINES,
        "OUTCOMES": OUTCOMES,
        "TICKET_STATUSES": TICKET_STATUSES,
    }


# Access control --------------------------------------------------------------------------


def _signed_in_operator() -> dict[str, Any] | None:
    """The operator of this session, if it is still valid (active, same password)."""
    operator_id = session.get("operator_id")
    if not isinstance(operator_id, int):
        return None
    operator = database.get_operator(get_db(), operator_id)
    if (
        operator is None
        or not operator["active"]
        or not operator["password_hash"]
        or session.get("auth") != auth.password_fingerprint(operator["password_hash"])
    ):
        session.pop("operator_id", None)
        session.pop("auth", None)
        return None
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
        if g.operator["role"] != "admin":
            return render_template("console/error.html", message=t("forbidden")), 403
        return view(*args, **kwargs)

    return wrapped


@bp.errorhandler(404)
def _not_found(_error):
    return render_template("console/error.html", message=t("not_found")), 404


# Sign-in ---------------------------------------------------------------------------------


def _throttled(login: str, remote_addr: str | None, now: datetime) -> int:
    """Minutes until this login (or address) may try again; 0 when it may now."""
    db = get_db()
    since = now - auth.THROTTLE_WINDOW
    checks = [(database.login_failures(db, login, since), auth.MAX_FAILURES_PER_LOGIN)]
    if remote_addr:
        checks.append(
            (database.address_failures(db, remote_addr, since), auth.MAX_FAILURES_PER_ADDRESS)
        )
    wait = timedelta(0)
    for (count, latest), limit in checks:
        if count >= limit and latest:
            wait = max(wait, datetime.fromisoformat(latest) + auth.THROTTLE_WINDOW - now)
    return math.ceil(wait.total_seconds() / 60) if wait > timedelta(0) else 0


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form; a good login starts a fresh session."""
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if g.operator is not None:
            return redirect(next_url)
        return render_template("console/login.html", next_url=next_url, login="")
    login_name = request.form.get("login", "").strip().lower()[:100]
    password = request.form.get("password", "")[: auth.MAX_PASSWORD_LENGTH + 1]
    now, remote_addr = _wall_now(), request.remote_addr
    wait_minutes = _throttled(login_name, remote_addr, now)
    if wait_minutes:
        log.warning(
            "sign-in throttled",
            extra={"login": login_name, "remote_addr": remote_addr, "minutes": wait_minutes},
        )
        message = t("too_many_attempts", minutes=wait_minutes)
        return (
            render_template(
                "console/login.html", next_url=next_url, login=login_name, error=message
            ),
            429,
        )
    operator = database.operator_by_login(get_db(), login_name) if login_name else None
    ok = auth.verify_password(operator["password_hash"] if operator else None, password)
    ok = ok and bool(operator and operator["active"])
    db = get_db()
    with database.write_transaction(db):
        database.record_login_attempt(db, login_name, remote_addr, now, ok)
        if ok:
            database.add_audit(
                db, now, operator["id"], "sign_in", login_name, {"remote_addr": remote_addr}
            )
    if not ok:
        log.info("sign-in failed", extra={"login": login_name, "remote_addr": remote_addr})
        return (
            render_template(
                "console/login.html",
                next_url=next_url,
                login=login_name,
                error=t("wrong_credentials"),
            ),
            401,
        )
    language = session.get("lang")
    session.clear()  # a new session on sign-in: no fixation, a new CSRF token
    session.permanent = True
    session["operator_id"] = operator["id"]
    session["auth"] = auth.password_fingerprint(operator["password_hash"])
    if language:
        session["lang"] = language
    return redirect(next_url)


@bp.post("/logout")
def logout():
    """Sign out (a POST with the CSRF token, so no other site can sign anyone out)."""
    _audit("sign_out", g.operator["login"])
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language
    return redirect(url_for("console.login"))


@bp.post("/language")
def set_language():
    """Switch the console between Russian and English (kept in the session)."""
    choice = request.form.get("lang")
    if choice in LANGUAGES:
        session["lang"] = choice
    return redirect(_safe_next(request.form.get("next")))


# Dashboard -------------------------------------------------------------------------------


@bp.get("/")
def dashboard():
    """Today's calls per line and hour, share reaching an operator, callbacks, speech."""
    db = get_db()
    now = _service_now()
    today = in_moscow(now).date()
    start = _moscow_day_start(today)
    end = start + timedelta(days=1)
    window = (database.timestamp(start), database.timestamp(end))

    per_hour: dict[int, dict[str, int]] = {hour: {} for hour in range(24)}
    per_line = dict.fromkeys(LINES, 0)
    for row in database.calls_per_hour(db, *window):
        hour = in_moscow(datetime.fromisoformat(row["hour"] + ":00:00+00:00")).hour
        per_hour[hour][row["line"]] = per_hour[hour].get(row["line"], 0) + row["calls"]
        per_line[row["line"]] = per_line.get(row["line"], 0) + row["calls"]
    total = sum(per_line.values())
    series = [(line, _label("line", line)) for line in per_line]
    hourly = stacked_columns([(f"{hour:02d}", per_hour[hour]) for hour in range(24)], series)
    lines_chart = horizontal_bars(
        [
            (_label("line", line), count, str(count), f"series-{line}")
            for line, count in per_line.items()
        ],
        width=320,
        label_width=165,
        text_width=40,
    )

    outcomes = database.outcome_counts(db, *window)
    reached = sum(outcomes.get(outcome, 0) for outcome in REACHED_OPERATOR)
    donut = Donut(reached / total if total else 0.0)
    outcome_chart = horizontal_bars(
        [
            (
                _label("outcome", outcome) if outcome else t("still_in_progress"),
                count,
                str(count),
                "series-outcome",
            )
            for outcome, count in sorted(outcomes.items(), key=lambda item: -item[1])
        ],
        width=720,
        label_width=300,
    )

    waiting_total, waiting = database.callbacks_waiting(db, limit=8)

    speech_rows = database.recognition_stats(db, database.timestamp(now - SPEECH_WINDOW))
    speech_total = sum(row["total"] for row in speech_rows)
    speech_ok = sum(row["ok"] or 0 for row in speech_rows)
    speech_bars = []
    for row in speech_rows:
        ok, rate = row["ok"] or 0, (row["ok"] or 0) / row["total"]
        name = f"{_label('language', row['language'])} · {_label('purpose', row['purpose'])}"
        speech_bars.append(
            (name, rate, f"{round(100 * rate)}% ({ok}/{row['total']})", "series-speech")
        )
    speech_chart = horizontal_bars(
        speech_bars, maximum=1.0, width=320, label_width=130, text_width=90
    )
    return render_template(
        "console/dashboard.html",
        today=today,
        total=total,
        hourly=hourly,
        series=series,
        lines_chart=lines_chart,
        reached_donut=donut,
        reached=reached,
        outcome_chart=outcome_chart,
        waiting_total=waiting_total,
        waiting=waiting,
        speech_chart=speech_chart,
        speech_total=speech_total,
        speech_donut=Donut(speech_ok / speech_total if speech_total else 0.0),
    )


# Call log --------------------------------------------------------------------------------

CALL_FILTER_ARGS = ("from", "to", "line", "outcome", "operator", "category", "q", "mine")


def _call_filters() -> database.CallFilters:
    """The call log's filters from the query string (anything unknown is ignored)."""
    day_from, day_to = _parse_day(request.args.get("from")), _parse_day(request.args.get("to"))
    digits, words = _split_search(request.args.get("q", ""))
    operator_id = g.operator["id"] if request.args.get("mine") else _int_arg("operator")
    return database.CallFilters(
        started_from=database.timestamp(_moscow_day_start(day_from)) if day_from else None,
        started_before=(
            database.timestamp(_moscow_day_start(day_to) + timedelta(days=1)) if day_to else None
        ),
        line=_choice_arg("line", LINES),
        outcome=_choice_arg("outcome", OUTCOMES),
        operator_id=operator_id,
        category=_choice_arg("category", CATEGORIES),
        digits=digits,
        text=words,
    )


@bp.get("/calls")
def calls():
    """The call log: newest first, filtered, paginated."""
    db = get_db()
    filters = _call_filters()
    page = _page()
    total = database.count_calls(db, filters)
    rows = database.search_calls(db, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    return render_template(
        "console/calls.html",
        calls=rows,
        pager=_pager(page, total),
        args=_filter_args(CALL_FILTER_ARGS),
        operators=database.list_operators(db),
    )


def _csv_cell(value: object) -> object:
    """Keep a spreadsheet from running a cell as a formula (phone numbers stay as they are)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        if not PHONE_LIKE.match(value):
            return "'" + value
    return value


@bp.get("/calls.csv")
def calls_csv():
    """The filtered call log as CSV (caller numbers masked; admins may ask for them whole)."""
    filters = _call_filters()
    reveal = bool(request.args.get("reveal")) and g.operator["role"] == "admin"
    _audit(
        "export_calls",
        None,
        {"filters": _filter_args(CALL_FILTER_ARGS), "revealed_numbers": reveal},
    )

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")  # so spreadsheet programs read the Cyrillic as UTF-8
        writer.writerow(CALL_FIELDS)
        for row in database.iter_calls(get_db(), filters, CSV_MAX_ROWS):
            record = call_record(row)
            if not reveal:
                record["from"] = mask_phone(record["from"])
            for name in ("started_at", "ended_at"):
                if record[name]:
                    record[name] = in_moscow(datetime.fromisoformat(record[name])).isoformat()
            writer.writerow([_csv_cell(record[name]) for name in CALL_FIELDS])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    stamp = in_moscow(_wall_now()).strftime("%Y%m%d-%H%M")
    return Response(
        stream_with_context(generate()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="calls-{stamp}.csv"'},
    )


# Live calls ------------------------------------------------------------------------------


def _live_rows() -> list[dict[str, Any]]:
    now = _service_now()
    rows = database.live_calls(get_db(), database.timestamp(now - LIVE_WINDOW))
    result = []
    for row in rows:
        started = datetime.fromisoformat(row["started_at"])
        result.append(
            {
                "call_sid": row["call_sid"],
                "url": url_for("console.call_detail", call_sid=row["call_sid"]),
                "started": format_moscow(row["started_at"], "time"),
                "line": _label("line", row["line"]),
                "language": _label("language", row["language"]),
                "caller": mask_phone(row["from_number"]) or "—",
                "step": _label("step", row["step"]),
                "order_number": row["order_number"] or "",
                "ticket_number": row["ticket_number"] or "",
                "operator": row["operator_name"] or "",
                "seconds": max(0, int((now - started).total_seconds())),
                "on_line": format_duration(max(0, (now - started).total_seconds())),
            }
        )
    return result


@bp.get("/live")
def live():
    """Calls in progress; the page polls live.json (and meta-refreshes without JavaScript)."""
    return render_template(
        "console/live.html",
        calls=_live_rows(),
        updated=format_moscow(database.timestamp(_service_now()), "time"),
    )


@bp.get("/live.json")
def live_json():
    """Calls in progress as JSON for the live page's polling."""
    return jsonify(
        {
            "calls": _live_rows(),
            "updated": format_moscow(database.timestamp(_service_now()), "time"),
        }
    )


# Call detail and recordings --------------------------------------------------------------


def _render_call(call_sid: str, revealed: bool):
    db = get_db()
    call = database.get_call(db, call_sid[:64])
    if call is None:
        abort(404)
    ticket = database.ticket_for_call(db, call_sid)
    return render_template(
        "console/call.html",
        call=call,
        events=database.call_events(db, call_sid),
        recognitions=database.call_recognitions(db, call_sid),
        recordings=database.call_recordings(db, call_sid),
        ticket=ticket,
        revealed=revealed,
    )


@bp.get("/calls/<call_sid>")
def call_detail(call_sid: str):
    """One call: its timeline, recognitions, recordings and ticket (the view is audited)."""
    if database.get_call(get_db(), call_sid[:64]) is None:
        abort(404)
    _audit("view_call", call_sid)
    return _render_call(call_sid, revealed=False)


@bp.post("/calls/<call_sid>/reveal")
@admin_required
def reveal_number(call_sid: str):
    """Show an admin the caller's whole number (audited)."""
    if database.get_call(get_db(), call_sid[:64]) is None:
        abort(404)
    _audit("reveal_number", call_sid)
    return _render_call(call_sid, revealed=True)


def recordings_dir() -> Path:
    """Where recordings are stored locally (IVR_RECORDINGS_DIR, default instance/recordings)."""
    return Path(getattr(_settings(), "recordings_dir", "") or "instance/recordings").resolve()


@bp.get("/recordings/<sid>")
def recording(sid: str):
    """A recording's local file, only from inside the recordings folder, never by path."""
    row = database.get_recording(get_db(), sid[:64])
    if row is None or not row.get("local_path"):
        abort(404)
    root = recordings_dir()
    path = Path(row["local_path"])
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        log.warning(
            "recording file refused: missing or outside the recordings folder",
            extra={"recording_sid": row["sid"], "call_sid": row["call_sid"]},
        )
        abort(404)
    response = send_file(
        path,
        mimetype=AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        conditional=True,
        max_age=0,
    )
    response.headers["Content-Disposition"] = "inline"
    return response


# Tickets ---------------------------------------------------------------------------------

TICKET_FILTER_ARGS = ("status", "category", "operator", "q", "mine", "callbacks")


@bp.get("/tickets")
def tickets():
    """Tickets, newest first, filtered, paginated."""
    db = get_db()
    digits, words = _split_search(request.args.get("q", ""))
    filters = database.TicketFilters(
        status=_choice_arg("status", TICKET_STATUSES),
        category=_choice_arg("category", CATEGORIES),
        operator_id=g.operator["id"] if request.args.get("mine") else _int_arg("operator"),
        after_hours=True if request.args.get("callbacks") else None,
        digits=digits,
        text=words,
    )
    page = _page()
    total = database.count_tickets(db, filters)
    return render_template(
        "console/tickets.html",
        tickets=database.search_tickets(db, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE),
        pager=_pager(page, total),
        args=_filter_args(TICKET_FILTER_ARGS),
        operators=database.list_operators(db),
    )


def _ticket_or_404(number: str) -> dict[str, Any]:
    ticket = database.get_ticket(get_db(), number[:32])
    if ticket is None:
        abort(404)
    return ticket


@bp.get("/tickets/<number>")
def ticket_detail(number: str):
    """One ticket: details, transcript, notes, and the forms to change it."""
    ticket = _ticket_or_404(number)
    return render_template(
        "console/ticket.html",
        ticket=ticket,
        notes=database.ticket_notes(get_db(), ticket["number"]),
        call=database.get_call(get_db(), ticket["call_sid"]) if ticket["call_sid"] else None,
    )


@bp.post("/tickets/<number>/status")
def ticket_status(number: str):
    """Move a ticket to another status (the IVR's status menu reads it); audited."""
    ticket = _ticket_or_404(number)
    status = request.form.get("status")
    if status not in TICKET_STATUSES:
        flash(t("status_invalid"), "error")
        return redirect(url_for("console.ticket_detail", number=ticket["number"]), 303)
    db = get_db()
    now = _wall_now()
    with database.write_transaction(db):
        database.set_ticket_status(db, ticket["number"], status, now)
        database.add_audit(
            db,
            now,
            g.operator["id"],
            "ticket_status",
            ticket["number"],
            {"from": ticket["status"], "to": status},
        )
    flash(t("status_changed", status=_label("ticket_status", status)), "ok")
    return redirect(url_for("console.ticket_detail", number=ticket["number"]), 303)


@bp.post("/tickets/<number>/notes")
def ticket_note(number: str):
    """Add a note to a ticket; audited."""
    ticket = _ticket_or_404(number)
    body = request.form.get("body", "").strip()
    if not body or len(body) > MAX_NOTE_LENGTH:
        flash(t("note_invalid"), "error")
        return redirect(url_for("console.ticket_detail", number=ticket["number"]), 303)
    db = get_db()
    now = _wall_now()
    with database.write_transaction(db):
        note_id = database.add_ticket_note(db, ticket["number"], g.operator["id"], body, now)
        database.add_audit(
            db, now, g.operator["id"], "ticket_note", ticket["number"], {"note_id": note_id}
        )
    flash(t("note_added"), "ok")
    return redirect(url_for("console.ticket_detail", number=ticket["number"]) + "#notes", 303)


# Roster (admins) -------------------------------------------------------------------------


def _operator_form(existing: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """Validate the roster form: (the operator's columns, message keys of the problems)."""
    form = request.form
    errors: list[str] = []
    values: dict[str, Any] = {}
    full_name = form.get("full_name", "").strip()
    if not full_name or len(full_name) > 200:
        errors.append("full_name_invalid")
    values["full_name"] = full_name
    values["name_en"] = form.get("name_en", "").strip()[:200] or None
    login_name = form.get("login", "").strip().lower()
    if not auth.LOGIN_PATTERN.match(login_name):
        errors.append("login_invalid")
    else:
        holder = database.operator_by_login(get_db(), login_name)
        if holder and (existing is None or holder["id"] != existing["id"]):
            errors.append("login_taken")
    values["login"] = login_name
    values["role"] = "admin" if form.get("role") == "admin" else "operator"
    try:
        values["languages"] = ",".join(parse_languages(",".join(form.getlist("languages")) or ""))
    except ValueError:
        errors.append("languages_invalid")
    try:
        values["endpoint"] = validate_endpoint(form.get("endpoint", ""))
    except ValueError:
        errors.append("endpoint_invalid")
        values["endpoint"] = form.get("endpoint", "")
    try:
        values["shift_start"], values["shift_end"] = parse_shift(
            f"{form.get('shift_start', '')}-{form.get('shift_end', '')}"
        )
    except ValueError:
        errors.append("shift_invalid")
        values["shift_start"], values["shift_end"] = form.get("shift_start"), form.get("shift_end")
    return values, errors


def _new_password_problem() -> str | None:
    password = request.form.get("password", "")
    if password != request.form.get("password_repeat", ""):
        return "passwords_differ"
    return auth.password_problem(password)


@bp.get("/operators")
@admin_required
def roster():
    """The roster with each operator's open tickets, and the form to add one."""
    return render_template(
        "console/roster.html", operators=database.list_operators(get_db()), form={}, errors=[]
    )


@bp.post("/operators")
@admin_required
def add_operator():
    """Add an operator (with a console password if one is given); audited."""
    values, errors = _operator_form(None)
    if request.form.get("password") and (problem := _new_password_problem()):
        errors.append(problem)
    if errors:
        return (
            render_template(
                "console/roster.html",
                operators=database.list_operators(get_db()),
                form=values,
                errors=errors,
            ),
            400,
        )
    db = get_db()
    now = _wall_now()
    password = request.form.get("password")
    password_hash = auth.hash_password(password) if password else None
    with database.write_transaction(db):
        operator_id = database.insert_operator(
            db, {**values, "password_hash": password_hash, "created_at": database.timestamp(now)}
        )
        database.add_audit(
            db,
            now,
            g.operator["id"],
            "operator_add",
            str(operator_id),
            {"login": values["login"], "role": values["role"], "password_set": bool(password_hash)},
        )
    flash(t("operator_added"), "ok")
    return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)


def _operator_or_404(operator_id: int) -> dict[str, Any]:
    operator = database.get_operator(get_db(), operator_id)
    if operator is None:
        abort(404)
    return operator


@bp.get("/operators/<int:operator_id>")
@admin_required
def operator_detail(operator_id: int):
    """One operator: the edit form, password, activation, and their open tickets."""
    operator = _operator_or_404(operator_id)
    return render_template(
        "console/operator.html",
        operator=operator,
        form=operator,
        errors=[],
        open_tickets=database.operator_open_tickets(get_db(), operator_id),
    )


@bp.post("/operators/<int:operator_id>")
@admin_required
def edit_operator(operator_id: int):
    """Save changes to an operator; audited with the names of the changed fields."""
    operator = _operator_or_404(operator_id)
    values, errors = _operator_form(operator)
    if operator_id == g.operator["id"] and values["role"] != "admin":
        errors.append("cannot_change_self")
    if errors:
        return (
            render_template(
                "console/operator.html",
                operator=operator,
                form=values,
                errors=errors,
                open_tickets=database.operator_open_tickets(get_db(), operator_id),
            ),
            400,
        )
    changed = {name: value for name, value in values.items() if operator.get(name) != value}
    if changed:
        db = get_db()
        now = _wall_now()
        with database.write_transaction(db):
            database.update_operator(db, operator_id, changed)
            database.add_audit(
                db,
                now,
                g.operator["id"],
                "operator_edit",
                str(operator_id),
                {"changed": {name: [operator.get(name), value] for name, value in changed.items()}},
            )
    flash(t("operator_saved"), "ok")
    return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)


@bp.post("/operators/<int:operator_id>/password")
@admin_required
def operator_password(operator_id: int):
    """Set an operator's console password (ends their sessions); audited."""
    operator = _operator_or_404(operator_id)
    problem = _new_password_problem()
    if problem:
        flash(t(problem), "error")
        return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)
    db = get_db()
    now = _wall_now()
    password_hash = auth.hash_password(request.form["password"])
    with database.write_transaction(db):
        database.set_operator_password(db, operator_id, password_hash)
        database.add_audit(
            db,
            now,
            g.operator["id"],
            "operator_password",
            str(operator_id),
            {"login": operator["login"]},
        )
    if operator_id == g.operator["id"]:  # keep the admin who changed their own password signed in
        session["auth"] = auth.password_fingerprint(password_hash)
    flash(t("password_set"), "ok")
    return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)


@bp.post("/operators/<int:operator_id>/active")
@admin_required
def operator_active(operator_id: int):
    """Deactivate (off assignment, cannot sign in) or reactivate an operator; audited."""
    operator = _operator_or_404(operator_id)
    active = request.form.get("active") == "1"
    if operator_id == g.operator["id"] and not active:
        flash(t("cannot_change_self"), "error")
        return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)
    db = get_db()
    now = _wall_now()
    with database.write_transaction(db):
        database.set_operator_active(db, operator_id, active)
        database.add_audit(
            db,
            now,
            g.operator["id"],
            "operator_activate" if active else "operator_deactivate",
            str(operator_id),
            {"login": operator["login"]},
        )
    flash(t("operator_activated" if active else "operator_deactivated"), "ok")
    return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)


# Audit trail (admins) --------------------------------------------------------------------


@bp.get("/audit")
@admin_required
def audit():
    """Who viewed calls, revealed numbers, exported, changed tickets and the roster."""
    db = get_db()
    page = _page()
    return render_template(
        "console/audit.html",
        rows=database.list_audit(db, PAGE_SIZE, (page - 1) * PAGE_SIZE),
        pager=_pager(page, database.count_audit(db)),
        args={},
    )

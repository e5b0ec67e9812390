"""The call log (filters, search, CSV), calls in progress, one call's detail and recordings."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import (
    Response,
    abort,
    g,
    jsonify,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)

from ivr import db as database
from ivr.call_log import CALL_FIELDS, call_record
from ivr.config import CATEGORIES
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.db import search
from ivr.db import speech as speech_store
from ivr.db import tickets as ticket_store
from ivr.hours import in_moscow
from ivr.logs import mask_phone
from ivr.vocabulary import AuditAction, Role
from ivr.web.console.base import (
    COUNT_LIMIT,
    LINES,
    OUTCOMES,
    PAGE_SIZE,
    admin_required,
    audit_number_search,
    audited,
    audited_filters,
    bp,
    choice_arg,
    day_arg,
    filter_args,
    is_admin,
    moscow_day_start,
    operator_arg,
    page_arg,
    pager,
    search_arg,
    service_now,
    wall_now,
)
from ivr.web.console.formatting import csv_cell, format_duration, format_moscow, label
from ivr.web.context import get_db, settings

log = logging.getLogger("ivr.console")

CSV_MAX_ROWS = 200_000
LIVE_WINDOW = timedelta(hours=4)  # a call silent this long without an end is not "live"
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}

CALL_FILTER_ARGS = ("from", "to", "line", "outcome", "operator", "category", "q", "mine")


def _call_filters() -> search.CallFilters:
    """The call log's filters from the query string (anything unknown is ignored)."""
    day_from, day_to = day_arg("from"), day_arg("to")
    digits, words = search_arg()
    return search.CallFilters(
        started_from=database.timestamp(moscow_day_start(day_from)) if day_from else None,
        started_before=(
            database.timestamp(moscow_day_start(day_to) + timedelta(days=1)) if day_to else None
        ),
        line=choice_arg("line", LINES),
        outcome=choice_arg("outcome", OUTCOMES),
        operator_id=operator_arg(),
        category=choice_arg("category", CATEGORIES),
        digits=digits,
        text=words,
        partial_numbers=is_admin(),
    )


@bp.get("/calls")
def calls():
    """The call log: newest first, filtered, paginated."""
    db = get_db()
    filters = _call_filters()
    audit_number_search("calls", filters.digits)
    page = page_arg()
    total = search.count(db, filters, up_to=COUNT_LIMIT + 1)
    rows = search.search(db, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    return render_template(
        "console/calls.html",
        calls=rows,
        pager=pager(page, total, COUNT_LIMIT),
        args=filter_args(CALL_FILTER_ARGS),
        operators=roster_store.list_operators(db),
    )


@bp.get("/calls.csv")
def calls_csv():
    """The filtered call log as CSV (caller numbers masked; admins may ask for them whole)."""
    filters = _call_filters()
    reveal = bool(request.args.get("reveal")) and g.operator["role"] == Role.ADMIN
    detail = {"filters": audited_filters(CALL_FILTER_ARGS), "revealed_numbers": reveal}
    with audited(AuditAction.EXPORT_CALLS, None, detail):
        pass

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")  # so spreadsheet programs read the Cyrillic as UTF-8
        writer.writerow(CALL_FIELDS)
        for row in search.iterate(get_db(), filters, CSV_MAX_ROWS):
            record = call_record(row)
            if not reveal:
                record["from"] = mask_phone(record["from"])
            for name in ("started_at", "ended_at"):
                if record[name]:
                    record[name] = in_moscow(datetime.fromisoformat(record[name])).isoformat()
            writer.writerow([csv_cell(record[name]) for name in CALL_FIELDS])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    stamp = in_moscow(wall_now()).strftime("%Y%m%d-%H%M")
    return Response(
        stream_with_context(generate()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="calls-{stamp}.csv"'},
    )


def _live_rows() -> list[dict[str, Any]]:
    now = service_now()
    rows = search.live_calls(get_db(), database.timestamp(now - LIVE_WINDOW))
    result = []
    for row in rows:
        started = datetime.fromisoformat(row["started_at"])
        result.append(
            {
                "call_sid": row["call_sid"],
                "url": url_for("console.call_detail", call_sid=row["call_sid"]),
                "started": format_moscow(row["started_at"], "time"),
                "line": label("line", row["line"]),
                "language": label("language", row["language"]),
                "caller": mask_phone(row["from_number"]) or "—",
                "step": label("step", row["step"]),
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
    from ivr.web.console.acd import queue_rows

    return render_template(
        "console/live.html",
        calls=_live_rows(),
        queue=queue_rows(),
        updated=format_moscow(database.timestamp(service_now()), "time"),
    )


@bp.get("/live.json")
def live_json():
    """Calls in progress as JSON for the live page's polling."""
    from ivr.web.console.acd import queue_rows

    return jsonify(
        {
            "calls": _live_rows(),
            "queue": queue_rows(),
            "updated": format_moscow(database.timestamp(service_now()), "time"),
        }
    )


def _render_call(call_sid: str, revealed: bool):
    db = get_db()
    call = call_store.get_call(db, call_sid[:64])
    if call is None:
        abort(404)
    ticket = ticket_store.ticket_for_call(db, call_sid)
    return render_template(
        "console/call.html",
        call=call,
        events=call_store.call_events(db, call_sid),
        recognitions=speech_store.call_recognitions(db, call_sid),
        recordings=speech_store.call_recordings(db, call_sid),
        ticket=ticket,
        revealed=revealed,
    )


@bp.get("/calls/<call_sid>")
def call_detail(call_sid: str):
    """One call: its timeline, recognitions, recordings and ticket (the view is audited)."""
    if call_store.get_call(get_db(), call_sid[:64]) is None:
        abort(404)
    with audited(AuditAction.VIEW_CALL, call_sid):
        pass
    return _render_call(call_sid, revealed=False)


@bp.post("/calls/<call_sid>/reveal")
@admin_required
def reveal_number(call_sid: str):
    """Show an admin the caller's whole number (audited)."""
    if call_store.get_call(get_db(), call_sid[:64]) is None:
        abort(404)
    with audited(AuditAction.REVEAL_NUMBER, call_sid):
        pass
    return _render_call(call_sid, revealed=True)


def recordings_dir() -> Path:
    """Where recordings are stored locally (IVR_RECORDINGS_DIR, default instance/recordings)."""
    return Path(settings().recordings_dir or "instance/recordings").resolve()


@bp.get("/recordings/<sid>")
def recording(sid: str):
    """A recording's local file, only from inside the recordings folder, never by path."""
    row = speech_store.get_recording(get_db(), sid[:64])
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

"""The queue and the callbacks: operators' presence, the live queue, calling customers back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app, flash, g, jsonify, redirect, render_template, request, url_for

from ivr.db import acd as acd_store
from ivr.db import tickets as ticket_store
from ivr.dispatch import Dispatcher
from ivr.logs import mask_phone
from ivr.vocabulary import AuditAction, Presence, values
from ivr.web.console.base import audited, bp, safe_next, wall_now
from ivr.web.console.formatting import format_duration, format_moscow, label, t
from ivr.web.context import get_db

FAILED_ATTEMPTS_NOTICE = 3


def dispatcher() -> Dispatcher:
    """The app's dispatcher (ivr.dispatch)."""
    return current_app.extensions["ivr.dispatcher"]


@bp.post("/presence")
def set_presence():
    """The signed-in operator takes calls (available) or steps away; audited."""
    presence = request.form.get("presence")
    back = safe_next(request.form.get("next"))
    if presence not in values(Presence):
        flash(t("error"), "error")
        return redirect(back, 303)
    detail = {"from": g.operator.get("presence"), "to": presence}
    with audited(AuditAction.PRESENCE, g.operator["login"], detail) as change:
        acd_store.set_presence(change.db, g.operator["id"], presence, change.now)
    if presence == Presence.AVAILABLE:
        dispatcher().wake()  # a queued caller may be waiting for exactly this operator
    flash(t("presence_changed", presence=label("presence", presence)), "ok")
    return redirect(back, 303)


def queue_rows() -> list[dict[str, Any]]:
    """Who waits, how long (real time), and which operator is being rung (the live view)."""
    now = wall_now()
    rows = []
    for row in acd_store.live_queue(get_db()):
        waited = max(0.0, (now - datetime.fromisoformat(row["entered_at"])).total_seconds())
        rows.append(
            {
                "call_sid": row["call_sid"],
                "url": url_for("console.call_detail", call_sid=row["call_sid"]),
                "caller": mask_phone(row["from_number"]) or "—",
                "language": label("language", row["language"]),
                "ticket_number": row["ticket_number"] or "",
                "waiting": format_duration(waited),
                "seconds": int(waited),
                "ringing": row["ringing_operator"] or "",
            }
        )
    return rows


@bp.get("/callbacks")
def callbacks():
    """Tickets waiting for a callback, oldest first, with their attempts."""
    rows = acd_store.callbacks(get_db())
    for row in rows:
        row["caller"] = mask_phone(row["caller_number"]) or "—"
        row["requested"] = format_moscow(row["requested_at"])
    return render_template(
        "console/callbacks.html",
        callbacks=rows,
        failed_notice=FAILED_ATTEMPTS_NOTICE,
        configured=dispatcher().api is not None,
    )


@bp.post("/callbacks/<number>/call")
def call_back(number: str):
    """Ring the signed-in operator's own phone; when they answer, the customer is dialled
    from the line's number. The operator never sees the full number. Audited."""
    ticket = ticket_store.get_ticket(get_db(), number[:32])
    if ticket is None:
        return render_template("console/error.html", message=t("not_found")), 404
    if dispatcher().api is None:
        flash(t("callback_unavailable"), "error")
        return redirect(url_for("console.callbacks"), 303)
    with audited(AuditAction.CALLBACK, ticket["number"]) as change:
        leg = dispatcher().reserve_callback(change.db, g.operator, ticket["number"])
        change.detail.update({"leg": leg["sid"] if leg else None, "placed": bool(leg)})
    if leg is None:
        flash(t("callback_busy"), "error")
        return redirect(url_for("console.callbacks"), 303)
    dispatcher().wake()  # places the reserved leg (off this request's transaction)
    flash(t("callback_placed", endpoint=g.operator["endpoint"]), "ok")
    return redirect(url_for("console.ticket_detail", number=ticket["number"]), 303)


@bp.get("/queue.json")
def queue_json():
    """The live queue as JSON for the live page's polling."""
    return jsonify({"queue": queue_rows()})

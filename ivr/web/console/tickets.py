"""Tickets: the list, one ticket, its status and notes."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, make_response, redirect, render_template, request, url_for

from ivr.config import CATEGORIES
from ivr.db import acd as acd_store
from ivr.db import calls as call_store
from ivr.db import operators as roster_store
from ivr.db import search
from ivr.db import tickets as ticket_store
from ivr.tickets import may_change_ticket
from ivr.vocabulary import AuditAction
from ivr.web.console.base import (
    COUNT_LIMIT,
    PAGE_SIZE,
    TICKET_STATUSES,
    audit_number_search,
    audited,
    bp,
    choice_arg,
    filter_args,
    is_admin,
    operator_arg,
    page_arg,
    pager,
    search_arg,
)
from ivr.web.console.formatting import label, t
from ivr.web.context import get_db

MAX_NOTE_LENGTH = 4000

TICKET_FILTER_ARGS = ("status", "category", "operator", "q", "mine", "callbacks")


@bp.get("/tickets")
def tickets():
    """Tickets, newest first, filtered, paginated."""
    db = get_db()
    digits, words = search_arg()
    filters = search.TicketFilters(
        status=choice_arg("status", TICKET_STATUSES),
        category=choice_arg("category", CATEGORIES),
        operator_id=operator_arg(),
        after_hours=True if request.args.get("callbacks") else None,
        digits=digits,
        text=words,
        partial_numbers=is_admin(),
    )
    audit_number_search("tickets", digits)
    page = page_arg()
    total = search.count(db, filters, up_to=COUNT_LIMIT + 1)
    return render_template(
        "console/tickets.html",
        tickets=search.search(db, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE),
        pager=pager(page, total, COUNT_LIMIT),
        args=filter_args(TICKET_FILTER_ARGS),
        operators=roster_store.list_operators(db),
    )


def _ticket_or_404(number: str) -> dict[str, Any]:
    ticket = ticket_store.get_ticket(get_db(), number[:32])
    if ticket is None:
        abort(404)
    return ticket


def _may_change(ticket: dict[str, Any]) -> bool:
    return may_change_ticket(g.operator["role"], g.operator["id"], ticket["operator_id"])


def _changeable_ticket_or_403(number: str) -> dict[str, Any]:
    """The ticket, if the signed-in operator may change it; 403 otherwise (ivr.tickets' rule)."""
    ticket = _ticket_or_404(number)
    if not _may_change(ticket):
        message = t("ticket_not_yours", name=ticket["operator_name"] or "—")
        abort(make_response(render_template("console/error.html", message=message), 403))
    return ticket


@bp.get("/tickets/<number>")
def ticket_detail(number: str):
    """One ticket: details, transcript, notes, and the forms to change it."""
    ticket = _ticket_or_404(number)
    return render_template(
        "console/ticket.html",
        ticket=ticket,
        notes=ticket_store.ticket_notes(get_db(), ticket["number"]),
        attempts=acd_store.callback_attempts(get_db(), ticket["number"]),
        may_change=_may_change(ticket),
        call=call_store.get_call(get_db(), ticket["call_sid"]) if ticket["call_sid"] else None,
    )


@bp.post("/tickets/<number>/status")
def ticket_status(number: str):
    """Move a ticket to another status (the IVR's status menu reads it); audited."""
    ticket = _changeable_ticket_or_403(number)
    status = request.form.get("status")
    if status not in TICKET_STATUSES:
        flash(t("status_invalid"), "error")
        return redirect(url_for("console.ticket_detail", number=ticket["number"]), 303)
    detail = {"from": ticket["status"], "to": status}
    with audited(AuditAction.TICKET_STATUS, ticket["number"], detail) as change:
        ticket_store.set_ticket_status(change.db, ticket["number"], status, change.now)
    flash(t("status_changed", status=label("ticket_status", status)), "ok")
    return redirect(url_for("console.ticket_detail", number=ticket["number"]), 303)


@bp.post("/tickets/<number>/notes")
def ticket_note(number: str):
    """Add a note to a ticket; audited."""
    ticket = _changeable_ticket_or_403(number)
    body = request.form.get("body", "").strip()
    if not body or len(body) > MAX_NOTE_LENGTH:
        flash(t("note_invalid"), "error")
        return redirect(url_for("console.ticket_detail", number=ticket["number"]), 303)
    with audited(AuditAction.TICKET_NOTE, ticket["number"]) as change:
        change.detail["note_id"] = ticket_store.add_ticket_note(
            change.db, ticket["number"], g.operator["id"], body, change.now
        )
    flash(t("note_added"), "ok")
    return redirect(url_for("console.ticket_detail", number=ticket["number"]) + "#notes", 303)

"""The roster (admins): operators, their passwords and activation; the audit trail."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for

from ivr import accounts
from ivr.db import audit as audit_store
from ivr.db import operators as roster_store
from ivr.db import tickets as ticket_store
from ivr.db.core import timestamp
from ivr.operators import parse_languages, parse_shift, validate_endpoint
from ivr.vocabulary import AuditAction, Role
from ivr.web.console.base import (
    MAX_AUDIT_PAGE,
    PAGE_SIZE,
    admin_required,
    audited,
    bp,
    page_arg,
    pager,
    start_operator_session,
)
from ivr.web.console.formatting import t
from ivr.web.context import get_db


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
    if not accounts.LOGIN_PATTERN.match(login_name):
        errors.append("login_invalid")
    else:
        holder = roster_store.operator_by_login(get_db(), login_name)
        if holder and (existing is None or holder["id"] != existing["id"]):
            errors.append("login_taken")
    values["login"] = login_name
    values["role"] = Role.ADMIN if form.get("role") == Role.ADMIN else Role.OPERATOR
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
    return accounts.password_problem(password)


@bp.get("/operators")
@admin_required
def roster():
    """The roster with each operator's open tickets, and the form to add one."""
    return render_template(
        "console/roster.html", operators=roster_store.list_operators(get_db()), form={}, errors=[]
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
                operators=roster_store.list_operators(get_db()),
                form=values,
                errors=errors,
            ),
            400,
        )
    password = request.form.get("password")
    password_hash = accounts.hash_password(password) if password else None
    detail = {"login": values["login"], "role": values["role"], "password_set": bool(password_hash)}
    with audited(AuditAction.OPERATOR_ADD, None, detail) as change:
        row = {**values, "password_hash": password_hash, "created_at": timestamp(change.now)}
        operator_id = roster_store.insert_operator(change.db, row)
        change.target = str(operator_id)
    flash(t("operator_added"), "ok")
    return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)


def _operator_or_404(operator_id: int) -> dict[str, Any]:
    operator = roster_store.get_operator(get_db(), operator_id)
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
        open_tickets=ticket_store.operator_open_tickets(get_db(), operator_id),
    )


@bp.post("/operators/<int:operator_id>")
@admin_required
def edit_operator(operator_id: int):
    """Save changes to an operator; audited with the names of the changed fields."""
    operator = _operator_or_404(operator_id)
    values, errors = _operator_form(operator)
    if operator_id == g.operator["id"] and values["role"] != Role.ADMIN:
        errors.append("cannot_change_self")
    if errors:
        return (
            render_template(
                "console/operator.html",
                operator=operator,
                form=values,
                errors=errors,
                open_tickets=ticket_store.operator_open_tickets(get_db(), operator_id),
            ),
            400,
        )
    changed = {name: value for name, value in values.items() if operator.get(name) != value}
    if changed:
        detail = {"changed": {name: [operator.get(name), value] for name, value in changed.items()}}
        with audited(AuditAction.OPERATOR_EDIT, str(operator_id), detail) as change:
            roster_store.update_operator(change.db, operator_id, changed)
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
    password_hash = accounts.hash_password(request.form["password"])
    detail = {"login": operator["login"]}
    with audited(AuditAction.OPERATOR_PASSWORD, str(operator_id), detail) as change:
        roster_store.set_operator_password(change.db, operator_id, password_hash)
        if operator_id == g.operator["id"]:  # the admin who changed their own stays, anew
            start_operator_session(change.db, operator_id, change.now)
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
    action = AuditAction.OPERATOR_ACTIVATE if active else AuditAction.OPERATOR_DEACTIVATE
    with audited(action, str(operator_id), {"login": operator["login"]}) as change:
        roster_store.set_operator_active(change.db, operator_id, active)
    flash(t("operator_activated" if active else "operator_deactivated"), "ok")
    return redirect(url_for("console.operator_detail", operator_id=operator_id), 303)


@bp.get("/audit")
@admin_required
def audit():
    """Who viewed calls, revealed numbers, exported, changed tickets and the roster."""
    db = get_db()
    page = page_arg(MAX_AUDIT_PAGE)
    return render_template(
        "console/audit.html",
        rows=audit_store.list_audit(db, PAGE_SIZE, (page - 1) * PAGE_SIZE),
        pager=pager(page, audit_store.count_audit(db)),
        args={},
    )

"""How the console shows things: its words, Moscow times, durations, timelines, CSV cells."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import g

from ivr.hours import in_moscow
from ivr.vocabulary import DEFAULT_LANGUAGE, EventKind
from ivr.web.i18n import label as label_in
from ivr.web.i18n import translate

CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PHONE_LIKE = re.compile(r"^\+?[\d\s()-]+$")


def t(key: str, **params: object) -> str:
    """A message in the signed-in operator's language."""
    return translate(g.get("lang", DEFAULT_LANGUAGE), key, **params)


def label(group: str, value: object) -> str:
    """A stored value (outcome, step, category, ...) in the operator's language."""
    return label_in(g.get("lang", DEFAULT_LANGUAGE), group, value)


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
    if kind == EventKind.PROMPT:
        return [f"«{text}»" for text in detail.get("texts", [])]
    if kind == EventKind.STEP:
        parts = [label("step", detail.get("step"))]
        if detail.get("end"):
            parts.append(
                f"→ {detail['end']}" + (f" {detail['target']}" if detail.get("target") else "")
            )
        return [" ".join(parts)]
    if kind == EventKind.CALL_STARTED:
        state = t("line_open") if detail.get("open") else t("line_closed")
        return [f"{label('line', detail.get('line'))} · {detail.get('to', '')} · {state}"]
    if kind == EventKind.TICKET and detail.get("ticket_number"):
        parts = [f"№ {detail['ticket_number']}", detail.get("operator_name") or t("unassigned")]
        parts.append(label("category", detail.get("category")))
        if detail.get("order_number"):
            parts.append(f"{t('col_order')} {detail['order_number']}")
        if detail.get("after_hours"):
            parts.append(t("callback_at"))
        return [" · ".join(parts)]
    if kind == EventKind.STATUS and set(detail) <= {"status", "duration"}:
        duration = detail.get("duration")
        suffix = f" · {format_duration(duration)}" if str(duration or "").isdigit() else ""
        return [f"{detail.get('status')}{suffix}"]
    if kind == EventKind.INPUT and set(detail) <= {"digits", "invalid"}:
        digits = detail.get("digits", "")
        shown = f"{t('pressed')}: {digits}" if digits else t("silence")
        return [shown + (f" ({t('invalid_keys')})" if detail.get("invalid") else "")]
    lines = []
    for key, value in detail.items():
        if value is None or value == "":
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {value}")
    return lines


def csv_cell(value: object) -> object:
    """Keep a spreadsheet from running a cell as a formula (phone numbers stay as they are)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        if not PHONE_LIKE.match(value):
            return "'" + value
    return value

"""The dashboard: today's calls per line and hour, who reached an operator, callbacks, speech."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import render_template

from ivr import db as database
from ivr.db import reports
from ivr.db import tickets as ticket_store
from ivr.hours import in_moscow
from ivr.vocabulary import REACHED_OPERATOR
from ivr.web.charts import Donut, horizontal_bars, stacked_columns
from ivr.web.console.base import LINES, bp, moscow_day_start, service_now
from ivr.web.console.formatting import label, t
from ivr.web.context import get_db

SPEECH_WINDOW = timedelta(days=7)


@bp.get("/")
def dashboard():
    """Today's calls per line and hour, share reaching an operator, callbacks, speech."""
    db = get_db()
    now = service_now()
    today = in_moscow(now).date()
    start = moscow_day_start(today)
    end = start + timedelta(days=1)
    window = (database.timestamp(start), database.timestamp(end))

    per_hour: dict[int, dict[str, int]] = {hour: {} for hour in range(24)}
    per_line = dict.fromkeys(LINES, 0)
    for row in reports.calls_per_hour(db, *window):
        hour = in_moscow(datetime.fromisoformat(row["hour"] + ":00:00+00:00")).hour
        per_hour[hour][row["line"]] = per_hour[hour].get(row["line"], 0) + row["calls"]
        per_line[row["line"]] = per_line.get(row["line"], 0) + row["calls"]
    total = sum(per_line.values())
    series = [(line, label("line", line)) for line in per_line]
    hourly = stacked_columns([(f"{hour:02d}", per_hour[hour]) for hour in range(24)], series)
    lines_chart = horizontal_bars(
        [
            (label("line", line), count, str(count), f"series-{line}")
            for line, count in per_line.items()
        ],
        width=320,
        label_width=165,
        text_width=40,
    )

    outcomes = reports.outcome_counts(db, *window)
    reached = sum(outcomes.get(outcome, 0) for outcome in REACHED_OPERATOR)
    donut = Donut(reached / total if total else 0.0)
    outcome_chart = horizontal_bars(
        [
            (
                label("outcome", outcome) if outcome else t("still_in_progress"),
                count,
                str(count),
                "series-outcome",
            )
            for outcome, count in sorted(outcomes.items(), key=lambda item: -item[1])
        ],
        width=720,
        label_width=300,
    )

    waiting_total, waiting = ticket_store.callbacks_waiting(db, limit=8)

    speech_rows = reports.recognition_stats(db, database.timestamp(now - SPEECH_WINDOW))
    speech_total = sum(row["total"] for row in speech_rows)
    speech_ok = sum(row["ok"] or 0 for row in speech_rows)
    speech_bars = []
    for row in speech_rows:
        ok, rate = row["ok"] or 0, (row["ok"] or 0) / row["total"]
        name = f"{label('language', row['language'])} · {label('purpose', row['purpose'])}"
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

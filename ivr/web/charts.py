"""Chart geometry for the dashboard: plain numbers the templates draw as inline SVG (no JS)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bar:
    """One rectangle: position, size, CSS class and its tooltip."""

    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True)
class Tick:
    """An axis label at a position."""

    x: float
    y: float
    text: str
    anchor: str = "middle"  # SVG text-anchor: start, middle or end


@dataclass
class Chart:
    """Everything an SVG needs: its size, bars, axis labels and the baseline."""

    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    gridlines: list[float] = field(default_factory=list)
    baseline: float = 0.0


def nice_maximum(value: float) -> int:
    """A round, even axis maximum at or above the value (2, 4, 10, 20, 40, 100, ...).

    Even, so that the middle gridline is a whole number of calls too.
    """
    if value <= 2:
        return 2
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (2, 4, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def stacked_columns(
    columns: list[tuple[str, dict[str, int]]],
    series: list[tuple[str, str]],
    width: int = 720,
    height: int = 220,
) -> Chart:
    """Columns (label, {series: value}) stacked in `series` order [(key, label)]."""
    left, right, top, bottom = 36, 8, 10, 22
    plot_width, plot_height = width - left - right, height - top - bottom
    totals = [sum(values.get(key, 0) for key, _ in series) for _, values in columns]
    maximum = nice_maximum(max(totals, default=0))
    chart = Chart(width, height, baseline=top + plot_height)
    slot = plot_width / max(len(columns), 1)
    for index, (label, values) in enumerate(columns):
        x = left + index * slot + slot * 0.15
        y = top + plot_height
        for key, series_label in series:
            value = values.get(key, 0)
            if not value:
                continue
            bar_height = plot_height * value / maximum
            y -= bar_height
            chart.bars.append(
                Bar(
                    x,
                    y,
                    slot * 0.7,
                    bar_height,
                    f"series-{key}",
                    f"{label}: {series_label} {value}",
                )
            )
        if len(columns) <= 12 or index % 3 == 0:
            chart.ticks.append(Tick(left + index * slot + slot / 2, height - 6, label))
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_height * (1 - fraction)
        chart.gridlines.append(y)
        chart.ticks.append(Tick(left - 6, y + 4, f"{round(maximum * fraction):g}", "end"))
    return chart


def horizontal_bars(
    rows: list[tuple[str, float, str, str]],
    maximum: float | None = None,
    width: int = 360,
    label_width: int = 150,
    text_width: int = 70,
) -> Chart:
    """Rows (label, value, text shown after the bar, css) as horizontal bars."""
    row_height = 26
    plot_width = width - label_width - text_width
    top = max(maximum if maximum is not None else max((r[1] for r in rows), default=0), 1e-9)
    chart = Chart(width, row_height * max(len(rows), 1) + 4)
    for index, (label, value, text, css) in enumerate(rows):
        y = 2 + index * row_height
        bar_width = plot_width * min(value, top) / top
        chart.bars.append(
            Bar(label_width, y + 4, bar_width, row_height - 10, css, f"{label}: {text}")
        )
        chart.ticks.append(Tick(label_width - 6, y + row_height / 2 + 3, label, "end"))
        chart.ticks.append(Tick(label_width + bar_width + 6, y + row_height / 2 + 3, text, "start"))
    return chart


@dataclass(frozen=True)
class Donut:
    """A ring showing one share: stroke-dasharray values for a circle of radius `radius`."""

    share: float
    radius: float = 42.0

    @property
    def circumference(self) -> float:
        return 2 * math.pi * self.radius

    @property
    def dash(self) -> str:
        filled = self.circumference * max(0.0, min(self.share, 1.0))
        return f"{filled:.2f} {self.circumference:.2f}"

    @property
    def percent(self) -> str:
        return f"{round(self.share * 100)}%"

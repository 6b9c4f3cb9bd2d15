"""Charts as inline SVG, laid out here and drawn by templates/_chart.html: no script, no library.

Bars carry a class per series (coloured from the Okabe-Ito palette in console.css, which stays
distinct for the common colour-vision deficiencies) and a <title> with the numbers, and every
chart comes with a legend that names each series and its total, so colour is never the only
way to tell them apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# The plot's own coordinates: the SVG is stretched to its box (preserveAspectRatio="none"), and
# the axis labels are HTML around it, so they stay readable at any width, a phone's included.
WIDTH = 1000
HEIGHT = 200


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket: when it starts and its count per series."""

    start: datetime
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str
    total: int


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    width: int
    height: int
    bars: list[Bar]
    y_labels: tuple[str, str, str]  # top, middle, bottom
    x_labels: list[str]  # evenly spaced from the first bucket's start to the last one's end
    series: list[Series]
    total: int
    unit: str  # what one bar counts, e.g. "per minute"


def css_name(series: str) -> str:
    return "s-" + re.sub(r"[^a-z0-9]+", "-", series.lower()).strip("-")


def stacked(title: str, points: Sequence[Point], series: Sequence[str], *, width: timedelta, unit: str) -> Chart:
    """Stacked bars, one per point, the series stacked in the order given (the first at the bottom)."""
    tallest = max((sum(p.counts.get(s, 0) for s in series) for p in points), default=0)
    top = _nice(tallest)
    slot = WIDTH / max(len(points), 1)
    gap = min(slot * 0.2, 3.0)
    bars: list[Bar] = []
    for index, point in enumerate(points):
        x = index * slot + gap / 2
        y = float(HEIGHT)
        label = _moment(point.start, width)
        for name in series:
            count = point.counts.get(name, 0)
            if not count:
                continue
            height = count / top * HEIGHT
            y -= height
            tip = f"{label}: {count:,} {name}"
            bars.append(Bar(round(x, 2), round(y, 2), round(slot - gap, 2), round(height, 2), css_name(name), tip))
    totals = [Series(name, css_name(name), sum(p.counts.get(name, 0) for p in points)) for name in series]
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        y_labels=(f"{top:,}", f"{top // 2:,}", "0"),
        x_labels=_x_labels(points, width),
        series=[s for s in totals if s.total or s.name == series[0]],
        total=sum(s.total for s in totals),
        unit=unit,
    )


def _nice(value: int) -> int:
    """The smallest of 1, 2 or 5 times a power of ten at least `value` (and at least 4, so halves are whole)."""
    if value <= 4:
        return 4
    magnitude: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _x_labels(points: Sequence[Point], width: timedelta, count: int = 4) -> list[str]:
    if not points:
        return []
    first = points[0].start
    whole = (points[-1].start + width - first) / (count - 1)
    return [(first + whole * i).astimezone(UTC).strftime("%H:%M") for i in range(count)]


def _moment(start: datetime, width: timedelta) -> str:
    moment = start.astimezone(UTC)
    return f"{moment.strftime('%H:%M')} to {(moment + width).strftime('%H:%M')} UTC"

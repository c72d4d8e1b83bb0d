"""Small line charts for the health page, drawn on the server as SVG (no script, no library, no CDN).

Each chart is data for templates/_charts.html: paths in a fixed viewBox, axis ticks, a legend and the text
alternatives (a summary for the SVG's <desc>, an hourly table under it). Colours come from console.css
classes, so the strict Content-Security-Policy (no inline style) holds. Long windows are thinned to at most
MAX_POINTS points per series: the peak of each group for depths and durations, the mean for rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agent_ops.models import MetricsHistory

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 712, 10, 176
MAX_POINTS = 360
MAX_KINDS = 6  # queue series drawn one by one; the rest are added up as "other"

Value = float | None
Reduce = Callable[[list[float]], float]


def _peak(values: list[float]) -> float:
    return max(values)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _total(values: list[float]) -> float:
    return sum(values)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    css: str  # the colour class in console.css (s0..s5, ok, bad, warn)
    path: str  # SVG path data; a gap (None) starts a new segment
    peak: float | None
    peak_at: datetime | None
    latest: float | None
    hourly: list[str]  # one cell per hour of the data table

    @property
    def latest_text(self) -> str:
        return "-" if self.latest is None else _number(self.latest)


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    unit: str
    series: list[Series]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    hours: list[str]  # the data table's row labels
    hourly_what: str  # what one cell of the data table is
    summary: str
    empty: bool
    markers: list[tuple[float, float, str]] = field(default_factory=list)  # x, y, what happened there
    width: int = WIDTH
    height: int = HEIGHT
    plot: tuple[int, int, int, int] = (LEFT, TOP, RIGHT, BOTTOM)


def _nice_ceiling(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least `value` (and at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    if value >= 10 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _thin(values: Sequence[Value], group: int, reduce: Reduce) -> list[Value]:
    thinned: list[Value] = []
    for start in range(0, len(values), group):
        known = [v for v in values[start : start + group] if v is not None]
        thinned.append(reduce(known) if known else None)
    return thinned


def _path(values: Sequence[Value], top: float) -> str:
    """Path data for `values` over the plot; each run of known values is one segment (a lone value is a dot)."""
    count = len(values)
    step = (RIGHT - LEFT) / max(count - 1, 1)
    parts: list[str] = []
    pen_down = False
    for i, value in enumerate(values):
        if value is None:
            pen_down = False
            continue
        x = LEFT + i * step
        y = BOTTOM - (value / top) * (BOTTOM - TOP)
        if pen_down:
            parts.append(f"L{x:.1f} {y:.1f}")
        else:
            parts.append(f"M{x:.1f} {y:.1f}h0.1")  # a segment of one point still shows
            pen_down = True
    return " ".join(parts)


def _at(start: datetime, minute: int) -> str:
    return (start + timedelta(minutes=minute)).strftime("%H:%M")


def line_chart(
    chart_id: str,
    title: str,
    unit: str,
    start: datetime,
    lines: Sequence[tuple[str, str, Sequence[Value]]],
    *,
    reduce: Reduce = _peak,
    hourly: Reduce = _peak,
    hourly_what: str = "the peak of the hour",
    what: str = "peak",
    markers: Sequence[int] = (),
    marker_text: str = "",
) -> Chart:
    """A chart of per-minute `lines` (name, colour class, values) starting at `start` (UTC)."""
    minutes = max((len(values) for _, _, values in lines), default=0)
    group = max(1, math.ceil(minutes / MAX_POINTS))
    known = [v for _, _, values in lines for v in values if v is not None]
    top = _nice_ceiling(max(known, default=0.0))
    series = []
    for name, css, values in lines:
        indexed = [(i, v) for i, v in enumerate(values) if v is not None]
        peak_i, peak = max(indexed, key=lambda pair: pair[1], default=(None, None))
        cells = [
            _thin(values[h : h + 60], 60, hourly)[0] if values[h : h + 60] else None for h in range(0, minutes, 60)
        ]
        series.append(
            Series(
                name=name,
                css=css,
                path=_path(_thin(values, group, reduce), top),
                peak=peak,
                peak_at=start + timedelta(minutes=peak_i) if peak_i is not None else None,
                latest=indexed[-1][1] if indexed else None,
                hourly=["-" if c is None else _number(c) for c in cells],
            )
        )
    hours = max(1, minutes // 60)
    every = max(1, round(hours / 4))
    # On whole hours (UTC) divisible by `every`: 00:00, 06:00, 12:00, 18:00 for a day.
    first = next(
        (
            m
            for m in range(min(minutes, every * 60))
            if (start + timedelta(minutes=m)).minute == 0 and (start + timedelta(minutes=m)).hour % every == 0
        ),
        0,
    )
    x_ticks = [
        (LEFT + (m / max(minutes - 1, 1)) * (RIGHT - LEFT), _at(start, m)) for m in range(first, minutes, every * 60)
    ]
    y_ticks = [(BOTTOM - f * (BOTTOM - TOP), _number(top * f)) for f in (0.0, 0.5, 1.0)]
    empty = not known
    drawn_markers = [
        (LEFT + m / max(minutes - 1, 1) * (RIGHT - LEFT), float(BOTTOM), f"{_at(start, m)} UTC: {marker_text}")
        for m in markers
    ]
    summary = _summary(title, unit, start, minutes, series, what, empty, len(drawn_markers), marker_text)
    return Chart(
        id=chart_id,
        title=title,
        unit=unit,
        series=series,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        hours=[f"{_at(start, h)}" for h in range(0, minutes, 60)],
        hourly_what=hourly_what,
        summary=summary,
        empty=empty,
        markers=drawn_markers,
    )


def _summary(
    title: str,
    unit: str,
    start: datetime,
    minutes: int,
    series: list[Series],
    what: str,
    empty: bool,
    marked: int,
    marker_text: str,
) -> str:
    window = f"{title}, {unit}, from {start:%Y-%m-%d %H:%M} UTC for {minutes // 60} h."
    if empty:
        return f"{window} Nothing to show yet: the heartbeat's minute rollup fills this chart."
    parts = [window]
    for s in series:
        if s.peak is None:
            parts.append(f"{s.name}: no data.")
            continue
        latest = "-" if s.latest is None else _number(s.latest)
        parts.append(f"{s.name}: {what} {_number(s.peak)} at {s.peak_at:%H:%M} UTC, latest {latest}.")
    if marked:
        parts.append(f"{marked} minute(s) with {marker_text}.")
    return " ".join(parts)


def health_charts(history: MetricsHistory) -> list[Chart]:
    """The health page's three charts: queue depth per kind, steps per minute, heartbeat duration."""
    start = history.from_
    peaks = sorted(history.queued.items(), key=lambda item: (-max(item[1], default=0), item[0]))
    shown = peaks[:MAX_KINDS]
    queue_lines: list[tuple[str, str, Sequence[Value]]] = [
        (kind, f"s{i}", [float(v) for v in values]) for i, (kind, values) in enumerate(shown)
    ]
    if len(peaks) > MAX_KINDS:
        rest = [values for _, values in peaks[MAX_KINDS:]]
        queue_lines.append(("other", "s6", [float(sum(column)) for column in zip(*rest, strict=True)]))
    if not queue_lines:
        queue_lines = [("queued", "s0", [0.0] * history.minutes)]

    def floats(values: list[int | None]) -> list[Value]:
        return [None if v is None else float(v) for v in values]

    failed_beats = [i for i, n in enumerate(history.heartbeat_failures) if n]
    return [
        line_chart(
            "chart-queue",
            "Queue depth by kind",
            "queued steps, deepest each minute",
            start,
            queue_lines,
            hourly_what="the deepest queue of the hour",
        ),
        line_chart(
            "chart-steps",
            "Steps per minute",
            "steps that ended each minute, all kinds",
            start,
            [
                ("succeeded", "ok", floats(history.succeeded)),
                ("failed", "bad", floats(history.failed)),
                ("retried", "warn", floats(history.retried)),
            ],
            reduce=_mean,
            hourly=_total,
            hourly_what="steps in the hour",
            what="busiest minute",
        ),
        line_chart(
            "chart-heartbeat",
            "Heartbeat duration",
            "milliseconds, the longest run each minute",
            start,
            [("heartbeat", "s0", floats(history.heartbeat_ms_max))],
            hourly_what="the longest run of the hour (ms)",
            markers=failed_beats,
            marker_text="a failed heartbeat",
        ),
    ]

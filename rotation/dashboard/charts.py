"""Charts drawn on the server as inline SVG: a run's step timeline and the forecast's calendar
heatmap. Pure functions of ops data; every text goes through ``escape``; colours are classes
styled by ``static/dashboard.css`` (the page's content security policy forbids inline styles).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from markupsafe import Markup, escape

from rotation.ops.forecast import Forecast
from rotation.ops.overview import TimelineStep

__all__ = ["heat_level", "heatmap_svg", "timeline_svg"]

_ROW = 22
_LABEL = 90
_WIDTH = 760


def _fmt(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def timeline_svg(steps: Sequence[TimelineStep], end: datetime | None = None) -> Markup:
    """One bar per event from its start to its end on a shared time axis; spans that began
    with a deliberate wait are hatched."""
    if not steps:
        return Markup('<p class="muted">No step has run yet.</p>')
    origin = steps[0].start
    last = max(end or steps[-1].end, steps[-1].end)
    total = max((last - origin).total_seconds(), 0.001)
    plot = _WIDTH - _LABEL - 10
    height = _ROW * len(steps) + 30
    parts = [
        f'<svg class="chart timeline" role="img" viewBox="0 0 {_WIDTH} {height}" '
        f'width="{_WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        "<title>step timeline</title>",
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect class="hatch-bg" width="6" height="6"/>'
        '<line class="hatch-line" x1="0" y1="0" x2="0" y2="6"/></pattern></defs>',
    ]
    for index, step in enumerate(steps):
        y = 4 + index * _ROW
        x = _LABEL + plot * (step.start - origin).total_seconds() / total
        width = max(plot * step.duration.total_seconds() / total, 2.0)
        fill = ' fill="url(#hatch)"' if step.waited else ""
        label = f"{step.step} ({step.outcome})"
        tip = (
            f"{step.step}: {step.from_state} -> {step.to_state}, {step.outcome}, "
            f"{_fmt(step.duration.total_seconds())}" + (" (after a wait)" if step.waited else "")
        )
        parts.append(
            f'<g class="bar outcome-{escape(step.outcome)}" data-step="{escape(step.step)}">'
            f"<title>{escape(tip)}</title>"
            f'<text class="label" x="4" y="{y + 14}">{escape(label)}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{_ROW - 6}"{fill}/></g>'
        )
    axis_y = 8 + _ROW * len(steps)
    parts.append(
        f'<line class="axis" x1="{_LABEL}" y1="{axis_y}" x2="{_WIDTH - 10}" y2="{axis_y}"/>'
        f'<text class="tick" x="{_LABEL}" y="{axis_y + 16}">{origin:%H:%M:%S}</text>'
        f'<text class="tick" x="{_WIDTH - 10}" y="{axis_y + 16}" text-anchor="end">'
        f"+{escape(_fmt(total))}</text>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def heat_level(count: int, budget: int) -> int:
    """0 (none) to 4 (at or over the budget) for a day's rotation count."""
    if count <= 0:
        return 0
    if count >= budget:
        return 4
    return min(3, 1 + (3 * count) // max(budget, 1))


_CELL = 18
_GAP = 4
_DAYS = ("Mon", "", "Wed", "", "Fri", "", "Sun")


def heatmap_svg(result: Forecast) -> Markup:
    """A calendar (weeks as columns, Monday first) of rotations per UTC day: darker is busier;
    a day with a collision is outlined and dotted, a day over budget is marked too."""
    first: date = result.start.date()
    last: date = (result.end - timedelta(microseconds=1)).date()
    counts = Counter(r.at.date() for r in result.rotations)
    collisions = Counter(c.start.date() for c in result.collisions)
    monday = first - timedelta(days=first.weekday())
    weeks = (last - monday).days // 7 + 1
    left, top = 32, 20
    width = left + weeks * (_CELL + _GAP) + 10
    height = top + 7 * (_CELL + _GAP) + 34
    parts = [
        f'<svg class="chart heatmap" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>rotations per day</title>'
    ]
    for row, name in enumerate(_DAYS):
        if name:
            y = top + row * (_CELL + _GAP) + _CELL - 3
            parts.append(f'<text class="tick" x="0" y="{y}">{name}</text>')
    day = first
    while day <= last:
        column = (day - monday).days // 7
        row = day.weekday()
        x = left + column * (_CELL + _GAP)
        y = top + row * (_CELL + _GAP)
        if day.day == 1 or (day == first and first.day <= 21):
            parts.append(f'<text class="tick" x="{x}" y="12">{day:%b}</text>')
        count = counts.get(day, 0)
        clashes = collisions.get(day, 0)
        over = count > result.budget
        classes = [f"day level-{heat_level(count, result.budget)}"]
        if clashes:
            classes.append("collision")
        if over:
            classes.append("over-budget")
        tip = f"{day:%a %Y-%m-%d}: {count} rotation{'s' if count != 1 else ''}"
        if clashes:
            tip += f", {clashes} collision{'s' if clashes != 1 else ''}"
        if over:
            tip += f", over the budget of {result.budget}"
        parts.append(
            f'<g class="{" ".join(classes)}" data-day="{day.isoformat()}" data-count="{count}" '
            f'data-collisions="{clashes}"><title>{escape(tip)}</title>'
            f'<rect x="{x}" y="{y}" width="{_CELL}" height="{_CELL}" rx="2"/>'
        )
        if clashes:
            cx, cy = x + _CELL / 2, y + _CELL / 2
            parts.append(f'<circle class="mark" cx="{cx}" cy="{cy}" r="3"/>')
        parts.append("</g>")
        day += timedelta(days=1)
    legend_y = top + 7 * (_CELL + _GAP) + 10
    parts.append(f'<text class="tick" x="{left}" y="{legend_y + 13}">fewer</text>')
    for level in range(5):
        x = left + 40 + level * (_CELL + _GAP)
        parts.append(
            f'<g class="day level-{level}"><rect x="{x}" y="{legend_y}" width="{_CELL}" '
            f'height="{_CELL}" rx="2"/></g>'
        )
    x = left + 40 + 5 * (_CELL + _GAP) + 4
    parts.append(f'<text class="tick" x="{x}" y="{legend_y + 13}">more</text>')
    x += 48
    parts.append(
        f'<g class="day level-1 collision"><rect x="{x}" y="{legend_y}" width="{_CELL}" '
        f'height="{_CELL}" rx="2"/><circle class="mark" cx="{x + _CELL / 2}" '
        f'cy="{legend_y + _CELL / 2}" r="3"/></g>'
        f'<text class="tick" x="{x + _CELL + 6}" y="{legend_y + 13}">collision</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))

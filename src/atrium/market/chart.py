"""A small server-side SVG line chart of closing prices (no JavaScript, no dependency).

Every piece of text goes through XML escaping, so a symbol can never inject markup, and the
document carries no script, link or external reference.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from decimal import Decimal
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 640, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 20, 44, 36
_MAX_POINTS = 800
_LINE = "#2563eb"
_GRID = "#e5e7eb"
_TEXT = "#374151"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def _nice_step(span: float, target_ticks: int = 4) -> float:
    """A 1, 2 or 5 times 10^n step giving about ``target_ticks`` grid lines over ``span``."""
    raw = span / target_ticks
    magnitude: float = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def _thin(points: Sequence[tuple[dt.date, Decimal]]) -> list[tuple[dt.date, Decimal]]:
    # Ten years of days is ~2500 points on ~560 pixels: evenly keep at most _MAX_POINTS,
    # always including the last one.
    if len(points) <= _MAX_POINTS:
        return list(points)
    step = (len(points) - 1) / (_MAX_POINTS - 1)
    return [points[round(i * step)] for i in range(_MAX_POINTS)]


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def render_close_chart(
    symbol: str,
    points: Sequence[tuple[dt.date, Decimal]],
) -> str:
    """An SVG document plotting ``points`` (date, close), oldest first."""
    shown = _thin(points)
    closes = [float(close) for _, close in shown]
    low, high = min(closes), max(closes)
    if math.isclose(low, high):
        low, high = low - 1, high + 1
    step = _nice_step(high - low)
    axis_low = math.floor(low / step) * step
    axis_high = math.ceil(high / step) * step
    # Enough decimals to tell grid lines apart (penny stocks), never fewer than cents.
    decimals = min(4, max(2, -math.floor(math.log10(step))))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    first_day = shown[0][0]
    days = max((shown[-1][0] - first_day).days, 1)

    def x(day: dt.date) -> float:
        if len(shown) == 1:
            return _LEFT + plot_w / 2
        return _LEFT + plot_w * (day - first_day).days / days

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - (value - axis_low) / (axis_high - axis_low))

    title = f"{symbol} closing price"
    period = f"{shown[0][0].isoformat()} to {shown[-1][0].isoformat()}"
    last = points[-1][1]
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label={quoteattr(f"{title}, {period}")}>',
        f"<title>{escape(title)}, {escape(period)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<g font-family="{_FONT}" fill="{_TEXT}">',
        f'<text x="{_LEFT}" y="20" font-size="15" font-weight="600">{escape(title)}</text>',
        f'<text x="{_LEFT}" y="36" font-size="11">{escape(period)} · last '
        f"{escape(f'{last:.{decimals}f}')} · {len(points)} trading days</text>",
    ]
    ticks = round((axis_high - axis_low) / step)
    for index in range(ticks + 1):
        tick = axis_low + index * step
        ty = y(tick)
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{_fmt(ty)}" y2="{_fmt(ty)}" '
            f'stroke="{_GRID}" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 8}" y="{_fmt(ty + 4)}" font-size="11" text-anchor="end">'
            f"{escape(f'{tick:.{decimals}f}')}</text>"
        )
    baseline = HEIGHT - _BOTTOM + 16
    parts.append(
        f'<text x="{_LEFT}" y="{baseline}" font-size="11">{escape(shown[0][0].isoformat())}</text>'
    )
    if len(shown) > 1:
        parts.append(
            f'<text x="{WIDTH - _RIGHT}" y="{baseline}" font-size="11" text-anchor="end">'
            f"{escape(shown[-1][0].isoformat())}</text>"
        )
    parts.append("</g>")
    coordinates = [(x(day), y(close)) for (day, _), close in zip(shown, closes, strict=True)]
    if len(coordinates) == 1:
        cx, cy = coordinates[0]
        parts.append(f'<circle cx="{_fmt(cx)}" cy="{_fmt(cy)}" r="3" fill="{_LINE}"/>')
    else:
        line = " ".join(f"{_fmt(px)},{_fmt(py)}" for px, py in coordinates)
        bottom = _fmt(y(axis_low))
        area = f"{_fmt(coordinates[0][0])},{bottom} {line} {_fmt(coordinates[-1][0])},{bottom}"
        parts.append(f'<polygon points="{area}" fill="{_LINE}" fill-opacity="0.08" stroke="none"/>')
        parts.append(
            f'<polyline points="{line}" fill="none" stroke="{_LINE}" stroke-width="2" '
            'stroke-linejoin="round" stroke-linecap="round"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"

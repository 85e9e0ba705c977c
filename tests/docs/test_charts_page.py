"""``/charts`` in a real browser: headless Chromium draws the market chart and the heatmap.

The screenshot is judged by its pixels, not against a golden image: the chart's line colour
must run across most of the chart's width and rise and fall, and the heatmap must show a
dozen departments' cells in several shades of its ramp. The same checks on the page without
a key (the key form only) must find neither, so they can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tests.docs.conftest import DemoServer, atrium

LINE = (37, 99, 235)  # atrium.market.chart._LINE, #2563eb
HEAT_LIGHT, HEAT_DARK = (255, 237, 213), (194, 65, 12)  # the ramp in static/charts/charts.js
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1440,1000",
    "--virtual-time-budget=15000",
]


def chromium_or_fail() -> str:
    """Debian's ``chromium``; in CI its absence is a failure, locally a visible skip."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is missing in CI (Debian package `chromium`; .ci/run installs it)")
    pytest.skip("chromium not installed (apt-get install chromium)")


def screenshot(url: str, folder: Path) -> Image.Image:
    """What a 1440x1000 browser window shows of ``url``, rendered by headless Chromium."""
    shot = folder / "shot.png"
    result = subprocess.run(
        [
            chromium_or_fail(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={folder / 'profile'}",  # a fresh profile: no state carried over
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return Image.open(shot).convert("RGB")


def line_columns(image: Image.Image) -> dict[int, list[int]]:
    """x → the y's of the pixels in the chart line's colour (the page's own chrome uses
    another blue, so nothing else should have it)."""
    bands = [
        band.point(lambda v, c=c: 255 if abs(v - c) <= 24 else 0)
        for band, c in zip(image.split(), LINE, strict=True)
    ]
    mask = ImageChops.multiply(ImageChops.multiply(bands[0], bands[1]), bands[2]).tobytes()
    width = image.size[0]
    found: dict[int, list[int]] = {}
    for index, value in enumerate(mask):
        if value:
            found.setdefault(index % width, []).append(index // width)
    return found


def heat_shades(image: Image.Image) -> dict[tuple[int, int, int], int]:
    """Pixel counts of the colours on the heatmap's ramp, by shade (quantised)."""
    counts: dict[tuple[int, int, int], int] = {}
    for n, (r, g, b) in image.getcolors(maxcolors=1 << 22) or []:
        t = (HEAT_LIGHT[1] - g) / (HEAT_LIGHT[1] - HEAT_DARK[1])
        on_ramp = [round(lo + (hi - lo) * t) for lo, hi in zip(HEAT_LIGHT, HEAT_DARK, strict=True)]
        if 0 < t <= 1 and all(abs(a - e) <= 3 for a, e in zip((r, g, b), on_ramp, strict=True)):
            shade = (r // 16, g // 16, b // 16)
            counts[shade] = counts.get(shade, 0) + n
    return counts


def longest_line(columns: dict[int, list[int]]) -> list[int]:
    """The y's of the widest run of neighbouring line columns (the chart, not a link's text)."""
    runs: list[list[int]] = []
    previous = -10
    for x in sorted(columns):
        if x - previous > 3:
            runs.append([])
        runs[-1].append(x)
        previous = x
    widest = max(runs, key=len, default=[])
    return [y for x in widest for y in columns[x]] if len(widest) >= 400 else []


def charts_are_drawn(image: Image.Image) -> bool:
    """A line 400+ columns wide that rises and falls 40+ pixels; 6+ heat shades fill cells."""
    ys = longest_line(line_columns(image))
    has_chart = bool(ys) and max(ys) - min(ys) >= 40
    shades = [n for n in heat_shades(image).values() if n >= 400]
    has_heatmap = len(shades) >= 6 and sum(shades) >= 12 * 4 * 1000
    return has_chart and has_heatmap


def test_the_charts_page_draws_both_charts_with_a_read_only_key(
    demo_server: DemoServer, tmp_path: Path
) -> None:
    created = atrium(
        ["apikeys", "create", "--owner", "charts-page", "--scopes", "market:read,hr:read"],
        demo_server.env,
        tmp_path,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    drawn = screenshot(f"{demo_server.url}/charts#key={key}", tmp_path / "with-key")
    drawn.save(tmp_path / "charts.png")
    assert charts_are_drawn(drawn), f"no chart in the screenshot {tmp_path / 'charts.png'}"

    asked = screenshot(f"{demo_server.url}/charts", tmp_path / "no-key")
    assert not line_columns(asked), "a chart line without a key"
    assert not charts_are_drawn(asked)

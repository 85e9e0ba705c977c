"""``/charts``: a read-only page that draws the market chart and an HR hiring heatmap.

A browser sends no API key by itself, so the page asks for one once (kept in the tab's session
storage) and fetches ``/api/financial_data/chart.svg`` and ``/hr/reports/hires-by-quarter``
with it. It is static: HTML, CSS and JavaScript served from the package (no CDN), under a
Content-Security-Policy that allows nothing but this server. The page itself needs no key and
holds no data; the API calls it makes are authorised like any other.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

CHARTS_DIR = Path(__file__).resolve().parent.parent / "static" / "charts"

# img-src blob: is the chart (fetched with the key, shown through an object URL).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install_charts(app: FastAPI) -> None:
    """Mount the page's assets and serve the page at ``/charts``."""
    app.mount("/static/charts", StaticFiles(directory=CHARTS_DIR), name="charts-static")
    page = (CHARTS_DIR / "index.html").read_text(encoding="utf-8")

    @app.get("/charts", include_in_schema=False)
    async def charts() -> HTMLResponse:
        return HTMLResponse(page, headers=HEADERS)

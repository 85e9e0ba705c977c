"""The four loads of ``atrium demo``, each through the path a user takes.

HR files, templates, the user and the certificates go through the running server's HTTP API;
the saved AlphaVantage responses go through the ``atrium market load`` command (how a user
loads saved responses: no HTTP endpoint writes prices), run in this process with this
environment's settings, and the demo then checks through the API that the server sees them.
Every step is idempotent: what exists already is left alone.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import click
import httpx

from atrium.demo.certs import demo_certificates
from atrium.market.cli import market as market_cli

HR_FILES = ("departments", "jobs", "hired_employees")  # in foreign-key order
MARKET_FILES = ("ibm_time_series_daily.json", "aapl_time_series_daily_adjusted.json")
DEMO_USER = {"name": "Ada Lovelace", "email": "ada@example.com", "password": "analytical-engine"}
SHOWN_REJECTS = 3


class DemoError(Exception):
    """The demo cannot go on (no server, a refused key); the message says what to do."""


@dataclass
class Section:
    """What one step did, as lines for the report; ``ok`` is false if the step failed."""

    title: str
    lines: list[str] = field(default_factory=list)
    ok: bool = True


def data_file(name: str) -> bytes:
    """One of the sample files shipped in the package."""
    return resources.files("atrium.demo").joinpath("data", name).read_bytes()


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
    return f"HTTP {response.status_code}: {detail}" if detail else f"HTTP {response.status_code}"


def _check(response: httpx.Response, what: str, *expected: int) -> Any:
    if response.status_code in (401, 403):
        raise DemoError(f"{what}: the server refused the API key ({_problem(response)})")
    if response.status_code not in (expected or (200,)):
        raise DemoError(f"{what}: {_problem(response)}")
    return response.json() if response.content else None


def _is_duplicate(errors: list[str]) -> bool:
    return bool(errors) and all(e.startswith("duplicate id") for e in errors)


def load_hr(client: httpx.Client) -> Section:
    """POST the three challenge files to ``/hr/{table}/csv``, in foreign-key order."""
    section = Section("HR data: the challenge's three CSV files, POST /hr/{table}/csv")
    for table in HR_FILES:
        name = f"{table}.csv"
        summary = _check(
            client.post(
                f"/hr/{table}/csv",
                content=data_file(name),
                headers={"content-type": "text/csv"},
            ),
            f"POST /hr/{table}/csv",
        )
        listed: list[dict[str, Any]] = summary["rejected"]
        duplicates = [r for r in listed if _is_duplicate(r["errors"])]
        invalid = [r for r in listed if not _is_duplicate(r["errors"])]
        count = summary.get("rejected_count", len(listed))
        parts = [f"{summary['inserted']} new"]
        if count and len(listed) == count:
            if duplicates:
                parts.append(f"{len(duplicates)} already loaded")
            if invalid:
                parts.append(f"{len(invalid)} rejected")
        elif count:
            parts.append(
                f"{count} not stored (the first {len(listed)} listed: "
                f"{len(duplicates)} already loaded, {len(invalid)} rejected)"
            )
        section.lines.append(f"{name:<20} {summary['received']:>5} rows: {', '.join(parts)}")
        for reject in invalid[:SHOWN_REJECTS]:
            # index is the 0-based line number; people count lines from 1.
            section.lines.append(f"    line {reject['index'] + 1}: {'; '.join(reject['errors'])}")
        if len(invalid) > SHOWN_REJECTS:
            reasons = Counter(e for r in invalid for e in r["errors"])
            common = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common(3))
            section.lines.append(f"    … {len(invalid) - SHOWN_REJECTS} more ({common})")
    return section


def load_market(client: httpx.Client) -> Section:
    """``atrium market load --all`` the saved responses, then check the server sees them."""
    section = Section("Market data: saved AlphaVantage responses, atrium market load --all")
    folder = resources.files("atrium.demo").joinpath("data")
    out = io.StringIO()
    with resources.as_file(folder) as path, contextlib.redirect_stdout(out):
        args = ["load", "--all", *(str(path / name) for name in MARKET_FILES)]
        try:
            # The command itself, in this process and so with the server's settings.
            market_cli.main(args, prog_name="atrium market", standalone_mode=False)
            error = None
        except click.ClickException as exc:
            error = exc.format_message()
    section.lines += [line for line in out.getvalue().splitlines() if line.strip()]
    if error is not None:
        section.ok = False
        section.lines.append(f"atrium market load failed: {error}")
        return section
    for name in MARKET_FILES:
        document = json.loads(data_file(name))
        symbol = document["Meta Data"]["2. Symbol"]
        days = sorted(document["Time Series (Daily)"])
        page = _check(
            client.get(
                "/api/financial_data",
                params={"symbol": symbol, "start_date": days[0], "end_date": days[-1]},
            ),
            "GET /api/financial_data",
        )
        seen = page["pagination"]["count"]
        if seen != len(days):
            section.ok = False
            section.lines.append(
                f"the server sees {seen} of the {len(days)} {symbol} days just loaded: it does "
                "not use this database (run `atrium demo` with the server's ATRIUM_* settings, "
                "e.g. from the folder it was started in)"
            )
    return section


def load_templates(client: httpx.Client) -> Section:
    """Create each sample template through ``POST /templates`` unless one has its name."""
    section = Section("Templates: POST /templates")
    for template in json.loads(data_file("templates.json")):
        found = _check(
            client.get("/templates", params={"name": template["name"]}), "GET /templates"
        )
        if found["total"]:
            section.lines.append(f"{template['name']}: already there")
            continue
        created = _check(client.post("/templates", json=template), "POST /templates", 201)
        section.lines.append(f"{template['name']}: created, id {created['templateid']}")
    return section


def _token_subject(token: str) -> int:
    # Only to learn our own id after a 409; the server verifies the token, not us.
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["sub"])


def load_certificates(client: httpx.Client) -> Section:
    """Register the demo user, log in, and add its certificates that are missing."""
    section = Section("Certificates: POST /users, POST /auth/token, POST /users/{id}/certificates")
    created = client.post("/users", json=DEMO_USER)
    if created.status_code not in (201, 409):
        _check(created, "POST /users", 201)
    login = client.post(
        "/auth/token",
        data={"username": DEMO_USER["email"], "password": DEMO_USER["password"]},
    )
    if login.status_code == 401:
        section.ok = False
        section.lines.append(
            f"{DEMO_USER['email']} exists with another password: certificates skipped"
        )
        return section
    token = _check(login, "POST /auth/token")["access_token"]
    user_id = _token_subject(token)
    state = "created" if created.status_code == 201 else "already there"
    section.lines.append(
        f"user {DEMO_USER['email']} (id {user_id}, password {DEMO_USER['password']}): {state}"
    )
    bearer = {"Authorization": f"Bearer {token}"}
    page = _check(
        client.get(f"/users/{user_id}/certificates", params={"limit": 100}, headers=bearer),
        "GET /users/{id}/certificates",
    )
    have = {item["body"] for item in page["items"]}
    for cert in demo_certificates():
        label = f"certificate {cert.common_name} ({'active' if cert.active else 'inactive'})"
        if cert.body in have:
            section.lines.append(f"{label}: already there")
            continue
        made = _check(
            client.post(
                f"/users/{user_id}/certificates",
                json={"private_key": cert.private_key, "body": cert.body, "active": cert.active},
                headers=bearer,
            ),
            "POST /users/{id}/certificates",
            201,
        )
        section.lines.append(f"{label}: created, id {made['id']}")
    return section

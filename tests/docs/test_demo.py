"""``atrium demo``: sample data in every area through the API, and a second run changes nothing."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import httpx

from atrium.demo.steps import DEMO_USER
from tests.docs.conftest import DemoServer, atrium, user_env
from tests.support import free_port


def _all_rows(client: httpx.Client, table: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while True:
        page = client.get(f"/hr/{table}", params={"limit": 1000, "offset": len(rows)}).json()
        rows += page["items"]
        if len(rows) >= page["total"]:
            return rows


def snapshot(demo: DemoServer) -> dict[str, Any]:
    """Everything the demo loads, read back through the API."""
    with httpx.Client(base_url=demo.url, headers={"X-API-KEY": demo.admin_key()}) as client:
        state: dict[str, Any] = {t: _all_rows(client, t) for t in ("departments", "jobs")}
        state["hired_employees"] = _all_rows(client, "hired_employees")
        for symbol in ("IBM", "AAPL"):
            state[symbol] = client.get(
                "/api/statistics",
                params={"symbol": symbol, "start_date": "2000-01-01", "end_date": "2030-01-01"},
            ).json()
            state[f"{symbol} days"] = client.get(
                "/api/financial_data", params={"symbol": symbol}
            ).json()["pagination"]["count"]
        state["templates"] = client.get("/templates", params={"limit": 1000}).json()
        token = client.post(
            "/auth/token", data={"username": DEMO_USER["email"], "password": DEMO_USER["password"]}
        ).json()["access_token"]
        state["certificates"] = client.get(
            "/users/1/certificates", headers={"Authorization": f"Bearer {token}"}
        ).json()
    return state


def test_the_first_start_keeps_its_admin_key_for_the_owner_only(demo_server: DemoServer) -> None:
    key_file = demo_server.data_dir / "admin_api_key"
    if not demo_server.embedded:
        # A server database gets its keys from its operator: no key is made, none is kept.
        assert not key_file.exists()
        assert "ATRIUM FIRST START" not in demo_server.server.output()
        return
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    shown = re.search(r"X-API-KEY: (atr_\S+)", demo_server.server.output())
    assert shown is not None
    assert key_file.read_text().strip() == shown.group(1)
    assert f"It is also kept in {key_file}" in demo_server.server.output()


def test_the_demo_loads_every_area_and_says_what(demo_server: DemoServer) -> None:
    out = demo_server.first_demo.stdout
    assert re.search(r"departments\.csv +12 rows: 12 new\n", out)
    assert re.search(r"jobs\.csv +183 rows: 183 new\n", out)
    assert re.search(r"hired_employees\.csv +2000 rows: 1960 new, 40 rejected\n", out)
    assert "line 17: datetime is empty" in out  # a rejected row, with its reason
    assert "IBM: 100 received, 100 kept (all days): 100 inserted, 0 updated, 0 unchanged" in out
    assert "AAPL: 100 received, 100 kept (all days): 100 inserted, 0 updated, 0 unchanged" in out
    assert len(re.findall(r"^  [\w-]+: created, id [0-9a-f-]{36}$", out, re.M)) == 4
    assert f"user {DEMO_USER['email']} (id 1, password {DEMO_USER['password']}): created" in out
    assert len(re.findall(r"certificate \S+ \((in)?active\): created", out)) == 3
    for path in ("/charts", "/docs", "/redoc"):
        assert f"  {demo_server.url}{path} " in out

    state = snapshot(demo_server)
    assert [len(state[t]) for t in ("departments", "jobs", "hired_employees")] == [12, 183, 1960]
    years = {row["datetime"][:4] for row in state["hired_employees"]}
    assert years == {"2019", "2020", "2021", "2022", "2023"}
    assert state["IBM days"] == state["AAPL days"] == 100
    assert state["IBM"]["data"]["symbol"] == "IBM"
    assert sorted(t["name"] for t in state["templates"]["items"]) == [
        "offer-letter",
        "password-reset",
        "weekly-market-note",
        "welcome-email",
    ]
    certificates = state["certificates"]["items"]
    assert sorted(c["active"] for c in certificates) == [False, True, True]
    assert all(c["body"].startswith("-----BEGIN CERTIFICATE-----") for c in certificates)
    with httpx.Client(
        base_url=demo_server.url, headers={"X-API-KEY": demo_server.admin_key()}
    ) as client:
        report = client.get("/hr/reports/hires-by-quarter", params={"year": 2021}).json()
    assert sum(row[q] for row in report for q in ("Q1", "Q2", "Q3", "Q4")) > 600


def test_a_second_run_changes_nothing(demo_server: DemoServer, tmp_path: Path) -> None:
    before = snapshot(demo_server)
    again = atrium(demo_server.demo_args(), demo_server.env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert snapshot(demo_server) == before
    out = again.stdout
    assert "created" not in out
    assert re.search(r"departments\.csv +12 rows: 0 new, 12 already loaded\n", out)
    assert "IBM: 100 received, 100 kept (all days): 0 inserted, 0 updated, 100 unchanged" in out
    assert out.count("already there") == 4 + 1 + 3  # templates, the user, certificates


def test_without_a_key_it_says_where_to_get_one(demo_server: DemoServer, tmp_path: Path) -> None:
    env = user_env(tmp_path / "other-data", int(demo_server.url.rsplit(":", 1)[1]))
    result = atrium(["demo"], env, tmp_path)
    assert result.returncode == 1
    assert "no API key: pass --api-key" in result.stderr
    assert "admin_api_key does not exist" in result.stderr


def test_a_refused_key_and_a_missing_server_are_named(
    demo_server: DemoServer, tmp_path: Path
) -> None:
    refused = atrium(["demo", "--api-key", "atr_not_a_key"], demo_server.env, tmp_path)
    assert refused.returncode == 1
    assert "the server refused the API key" in refused.stderr
    nobody = atrium(
        [*demo_server.demo_args(), "--url", f"http://127.0.0.1:{free_port()}"],
        demo_server.env,
        tmp_path,
    )
    assert nobody.returncode == 1
    assert "no Atrium server answers at http://127.0.0.1:" in nobody.stderr
    assert "make serve" in nobody.stderr


def test_a_server_elsewhere_needs_consent(demo_server: DemoServer, tmp_path: Path) -> None:
    # Refused before any connection: the demo user's password is public.
    result = atrium(
        [*demo_server.demo_args(), "--url", "http://atrium.example:8000"],
        demo_server.env,
        tmp_path,
    )
    assert result.returncode == 1
    assert "is not on this machine" in result.stderr
    assert "--allow-remote" in result.stderr

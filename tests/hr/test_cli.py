"""``atrium hr load | backup | restore``, and a load killed mid-way then retried."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench._hr_data import write_all
from click.testing import CliRunner, Result

from atrium.cli import main
from atrium.settings import Settings, get_settings
from tests.hr.conftest import rows_of
from tests.support import settings_env


async def run_cli(settings: Settings, *args: str) -> Result:
    """Run ``atrium …`` in-process (in a thread: it runs its own event loop)."""

    def invoke() -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(main, list(args), env=settings_env(settings))
        finally:
            get_settings.cache_clear()

    return await asyncio.to_thread(invoke)


async def test_load_backup_restore(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    valid = write_all(tmp_path, 300, dirty=10)
    loaded = await run_cli(settings, "hr", "load", str(tmp_path))
    assert loaded.exit_code == 0, loaded.output
    assert "departments: 12 received, 12 inserted, 0 rejected" in loaded.stdout
    assert "jobs: 183 received, 183 inserted, 0 rejected" in loaded.stdout
    assert f"hired_employees: 300 received, {valid} inserted, {300 - valid} rejected" in (
        loaded.stdout
    )
    assert "  record " in loaded.stdout  # the first rejects, with their reasons
    before = await rows_of(client, "hired_employees")
    assert len(before) == valid

    made = await run_cli(settings, "hr", "backup")
    assert made.exit_code == 0, made.output
    backup_id = json.loads(made.stdout)["id"]

    from tests.conftest import _wipe

    await _wipe(client._transport.app)  # type: ignore[attr-defined]
    restored = await run_cli(settings, "hr", "restore", backup_id)
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["restored"]["hired_employees"] == valid
    assert await rows_of(client, "hired_employees") == before

    missing = await run_cli(settings, "hr", "restore", "20000101T000000Z-00000000")
    assert missing.exit_code == 1
    assert "does not exist" in missing.output


async def test_load_one_file(client: httpx.AsyncClient, settings: Settings, tmp_path: Path) -> None:
    odd = tmp_path / "export.csv"
    odd.write_bytes(b"\xef\xbb\xbf1,Accounting\r\n2,\r\n")
    refused = await run_cli(settings, "hr", "load", str(odd))
    assert refused.exit_code == 2
    assert "--table" in refused.output
    loaded = await run_cli(settings, "hr", "load", str(odd), "--table", "departments")
    assert loaded.exit_code == 0, loaded.output
    assert "departments: 2 received, 1 inserted, 1 rejected" in loaded.stdout
    assert "record 2: department is empty" in loaded.stdout
    assert await rows_of(client, "departments") == [{"id": 1, "department": "Accounting"}]


async def _count(client: httpx.AsyncClient, table: str) -> int:
    page = await client.get(f"/hr/{table}", params={"limit": 1})
    total: int = page.json()["total"]
    return total


@pytest.mark.slow
async def test_killed_mid_load_then_retried(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    rows = 100_000
    valid = await asyncio.to_thread(write_all, tmp_path, rows, dirty=100)
    command = [sys.executable, "-m", "atrium.cli", "hr", "load", str(tmp_path)]
    env = settings_env(settings)
    proc = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    seen = b""
    async with asyncio.timeout(60):
        while b"loading hired_employees" not in seen:  # departments and jobs are committed
            line = await proc.stderr.readline()
            assert line, f"load ended early: {seen.decode(errors='replace')}"
            seen += line
        if settings.database_url and settings.database_url.startswith("postgresql"):
            await _wait_for_load(client)
    assert proc.returncode is None, "the load finished before it could be killed"
    proc.kill()  # SIGKILL: no cleanup of any kind
    assert await proc.wait() == -signal.SIGKILL

    assert await _count(client, "hired_employees") == 0
    assert await _count(client, "departments") == 12

    retry = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await retry.communicate()
    assert retry.returncode == 0, stderr.decode()[-3000:]
    output = stdout.decode()
    assert "departments: 12 received, 0 inserted, 12 rejected" in output
    assert f"hired_employees: {rows} received, {valid} inserted, {rows - valid} rejected" in output
    assert await _count(client, "hired_employees") == valid


async def _wait_for_load(client: httpx.AsyncClient) -> None:
    # On PostgreSQL, wait until the load's COPY (or its INSERT) runs, so the kill lands in it.
    from sqlalchemy import text

    engine: Any = client._transport.app.state.engine  # type: ignore[attr-defined]
    for _ in range(1500):
        async with engine.connect() as connection:
            active = await connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE '%hr_stage%' AND state = 'active' AND pid <> pg_backend_pid()"
                )
            )
            if active.scalar():
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the load never showed up in pg_stat_activity")

"""``/livez`` (the process answers) and ``/readyz`` (its dependencies answer)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.errors import ServiceUnavailable, problem_responses
from atrium.platform.migrate import current_revisions, head_revisions

router = APIRouter(tags=["health"])
log = logging.getLogger("atrium.health")

CHECK_TIMEOUT = 2.0


class Live(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    """Every dependency answered."""

    status: Literal["ok"] = "ok"
    checks: dict[str, str]


@router.get("/livez", summary="Liveness probe")
async def livez() -> Live:
    """Answer as long as the process can serve; checks no dependency on purpose."""
    return Live()


@router.get(
    "/readyz",
    summary="Readiness probe",
    responses={
        200: {"content": {"application/json": {"example": {"status": "ok", "checks": {}}}}},
        **problem_responses(503),
    },
)
async def readyz(request: Request) -> Ready:
    """Check the database (reachable, migrated to head) and Redis when configured."""
    checks: dict[str, str] = {}
    failures: dict[str, str] = {}
    engine: AsyncEngine = request.app.state.engine
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            current = await current_revisions(engine)
        expected = head_revisions()
        if current != expected:
            failures["migrations"] = f"at {sorted(current)}, expected {sorted(expected)}"
        else:
            checks["database"] = "ok"
            checks["migrations"] = "ok"
    except Exception as exc:
        failures["database"] = type(exc).__name__
    redis: Any = getattr(request.app.state, "redis", None)
    if redis is not None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            failures["redis"] = type(exc).__name__
    if failures:
        log.warning("not ready", extra={"failures": failures})
        raise ServiceUnavailable(
            "; ".join(f"{name}: {why}" for name, why in failures.items()),
            checks={**checks, **failures},
        )
    return Ready(checks=checks)

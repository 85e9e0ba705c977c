"""What the pure-ASGI middlewares share: reading a header, answering 503 when a store is down."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

from atrium.platform.headers import header
from atrium.platform.idempotency import IdempotencyStore
from tests.support import free_port


def test_header_reads_the_first_value_as_latin1() -> None:
    scope = {
        "headers": [
            (b"x-other", b"1"),
            (b"x-api-key", b" atr_caf\xe9 "),
            (b"x-api-key", b"second"),
        ]
    }
    assert header(scope, b"x-api-key") == " atr_caf\u00e9 "  # callers strip where they mean to
    assert header(scope, b"x-missing") is None
    assert header({"headers": []}, b"x-api-key") is None


async def test_an_unreachable_idempotency_store_answers_503_and_runs_nothing(
    client: httpx.AsyncClient, clean: FastAPI
) -> None:
    # A real store pointed at a port nobody listens on: every lookup fails to connect.
    nowhere = create_async_engine(f"postgresql+asyncpg://atrium@127.0.0.1:{free_port()}/none")
    working = clean.state.idempotency
    clean.state.idempotency = IdempotencyStore(nowhere)
    try:
        response = await client.post(
            "/templates", json={"name": "never"}, headers={"Idempotency-Key": "down-1"}
        )
    finally:
        clean.state.idempotency = working
        await nowhere.dispose()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    problem = response.json()
    assert problem["type"].endswith("/unavailable")
    assert problem["detail"] == "the idempotency store cannot be reached; retry shortly"
    assert (await client.get("/templates")).json()["total"] == 0

"""Shared state across replicas behind nginx: one rate limit for all of them (Redis), and a
template changed through one replica is never read stale through another (versioned cache)."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest
from fastapi import FastAPI
from scripts.cluster import Cluster

from atrium.platform.apikeys import KeyStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPLICA = "x-atrium-replica"


async def test_one_rate_limit_across_all_replicas(clean: FastAPI, cluster: Cluster) -> None:
    store: KeyStore = clean.state.api_keys
    key, _ = await store.create("cluster-burst", ("templates:read",), rate_limit=10)
    async with httpx.AsyncClient(base_url=cluster.url, headers={"X-API-KEY": key}) as http:
        responses = await asyncio.gather(*(http.get("/templates") for _ in range(45)))
    statuses = [r.status_code for r in responses]
    # Three replicas, one bucket: exactly the limit gets through, not three times it.
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 35, statuses
    assert {r.headers[REPLICA] for r in responses} == {"replica-1", "replica-2", "replica-3"}


async def test_a_changed_template_is_never_read_stale_through_another_replica(
    clean: FastAPI, cluster: Cluster
) -> None:
    store: KeyStore = clean.state.api_keys
    key, _ = await store.create(
        "cluster-rw", ("templates:read", "templates:write"), rate_limit=100_000
    )
    urls = [r.url for r in cluster.replicas]
    turn = itertools.cycle(range(3))
    async with httpx.AsyncClient(headers={"X-API-KEY": key}, timeout=30) as http:
        created = await http.post(f"{urls[0]}/templates", json={"name": "t", "content": "v0"})
        assert created.status_code == 201, created.text
        path = f"/templates/{created.json()['templateid']}"
        for n in range(1, 21):
            # Every replica has the current version cached before the change…
            for url in urls:
                assert (await http.get(url + path)).json()["content"] == f"v{n - 1}"
            writer = urls[next(turn)]
            changed = await http.put(writer + path, json={"name": "t", "content": f"v{n}"})
            assert changed.status_code == 200, changed.text
            # …and every replica answers the new one right after the writer acknowledged it.
            for url in urls:
                got = await http.get(url + path)
                assert got.json()["content"] == f"v{n}", (writer, url, n)
            listed = (await http.get(f"{cluster.url}/templates", params={"name": "t"})).json()
            assert [t["content"] for t in listed["items"]] == [f"v{n}"]

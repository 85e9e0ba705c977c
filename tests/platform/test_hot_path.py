"""What keeps requests off slow paths: no dependency in the thread pool, a warm start."""

from __future__ import annotations

import gc
import inspect
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.warmup import GC_YOUNG_THRESHOLD, freeze_heap, open_pool
from atrium.settings import Settings


def _runs_on_the_loop(call: Any) -> bool:
    # FastAPI runs a dependency in its thread pool unless it is a coroutine (or async
    # generator) function, or an object whose __call__ is one (the security schemes).
    for candidate in (call, getattr(call, "__call__", None)):  # noqa: B004
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            return True
    return False


def _sync_dependencies(dependant: Dependant) -> list[str]:
    found = []
    for sub in dependant.dependencies:
        if sub.call is not None and not _runs_on_the_loop(sub.call):
            found.append(getattr(sub.call, "__qualname__", repr(sub.call)))
        found += _sync_dependencies(sub)
    return found


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found = []
    for route in routes:
        included = getattr(route, "original_router", None)  # an included router (FastAPI)
        if included is not None:
            found += _api_routes(included.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def test_no_dependency_of_any_route_runs_in_the_thread_pool(app: FastAPI) -> None:
    routes = _api_routes(app.routes)
    assert {"/templates/{templateid}", "/users/{user_id}"} <= {r.path for r in routes}
    offenders = {
        route.path: sync for route in routes if (sync := _sync_dependencies(route.dependant))
    }
    assert offenders == {}


def test_the_started_app_froze_its_start_up_heap(app: FastAPI) -> None:
    assert gc.get_freeze_count() > 10_000  # modules, routes, models: out of the collector's way
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
    frozen = gc.get_freeze_count()
    freeze_heap()  # once per process: a second app (tests) changes nothing
    assert gc.get_freeze_count() == frozen


@pytest.mark.postgres
async def test_the_pool_is_open_before_the_first_request(
    engine: AsyncEngine, settings: Settings
) -> None:
    await open_pool(engine, settings.db_pool_size)
    assert engine.pool.checkedin() == settings.db_pool_size  # type: ignore[attr-defined]

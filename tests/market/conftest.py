"""Market fixtures: the AlphaVantage replay server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.market.replay import ReplayServer, replay_server


@pytest.fixture(scope="session")
def _replay() -> Iterator[ReplayServer]:
    with replay_server() as server:
        yield server


@pytest.fixture
def alphavantage(_replay: ReplayServer) -> Iterator[ReplayServer]:
    """The replay server with no script and no recorded request."""
    _replay.reset()
    yield _replay
    _replay.reset()

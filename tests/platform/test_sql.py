"""The engine seams of ``platform.sql`` and ``platform.sqltypes`` on this run's engine.

Each test runs on a scratch table of its own (created and dropped here, with the same table
options Atrium's migrations get). The RETURNING fallbacks that MySQL needs are also run on
PostgreSQL and SQLite by switching the dialect's capability off, so every path is proven on
every engine CI has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from atrium.platform import sql
from atrium.platform.sqltypes import LongText, UtcDateTime, empty_text, server_now

metadata = MetaData()
items = Table(
    "atrium_seam_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(50), nullable=False, unique=True),
    Column("note", LongText, nullable=False, server_default=empty_text()),
    Column("owner", String(32), nullable=True),
    Column("at", UtcDateTime, nullable=True),
    Column("created", UtcDateTime, nullable=False, server_default=server_now()),
)
# Strings that sort differently by code point than by any linguistic collation.
WORDS = ["b", "B", "a", "A", "é", "e", "z", "Z", "_", "1", "🙂", "ä", "a ", "ß", "ss"]


@pytest.fixture
async def maker(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a fresh scratch table (dropped after the test)."""
    async with engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)
        await connection.run_sync(metadata.create_all)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.drop_all)


async def test_upsert_inserts_then_overwrites(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session, session.begin():
        statement = sql.upsert(items, keys=["name"], update=["note"])
        await session.execute(statement, [{"name": "a", "note": "1"}, {"name": "b", "note": "1"}])
        await session.execute(statement, [{"name": "a", "note": "2"}])
        rows = (await session.execute(select(items.c.name, items.c.note).order_by("name"))).all()
    assert [tuple(r) for r in rows] == [("a", "2"), ("b", "1")]


async def test_insert_ignore_counts_only_new_rows(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    async with maker() as session, session.begin():
        first = await session.execute(sql.insert_ignore(items, keys=["name"]).values(name="a"))
        again = await session.execute(sql.insert_ignore(items, keys=["name"]).values(name="a"))
        count = await session.scalar(select(func.count()).select_from(items))
    assert (getattr(first, "rowcount", None), getattr(again, "rowcount", None), count) == (1, 0, 1)


async def test_code_point_order_and_exact_equality(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    async with maker() as session, session.begin():
        await session.execute(items.insert(), [{"name": w} for w in WORDS])
        ordered = (
            await session.scalars(select(items.c.name).order_by(sql.code_point_order(items.c.name)))
        ).all()
        # Case, accents and trailing spaces all matter, as on PostgreSQL.
        matches = (await session.scalars(select(items.c.name).where(items.c.name == "a"))).all()
    assert ordered == sorted(WORDS)
    assert matches == ["a"]


async def test_text_and_time_round_trip(maker: async_sessionmaker[AsyncSession]) -> None:
    """4-byte UTF-8, 1 MB of text, and instants with microseconds come back as written."""
    at = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)
    note = "🙂 𝄞 漢字 " * 100_000
    async with maker() as session, session.begin():
        await session.execute(items.insert().values(name="🙂", note=note, at=at))
    async with maker() as session:
        row = (await session.execute(select(items).where(items.c.name == "🙂"))).one()
    assert row.note == note
    assert row.at == at
    assert row.at.tzinfo is not None
    assert abs(row.created - datetime.now(UTC)) < timedelta(minutes=5)  # UTC, not local time


async def test_next_timestamp_moves_strictly_forward(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    future = datetime.now(UTC) + timedelta(days=1)  # "now" would not move it
    seen = [future]
    async with maker() as session, session.begin():
        await session.execute(items.insert().values(name="a", at=future))
        for _ in range(3):
            await session.execute(update(items).values(at=sql.next_timestamp(items.c.at)))
            seen.append(await session.scalar(select(items.c.at)))
    assert seen == sorted(set(seen))  # strictly increasing
    # By the smallest step the engine keeps: 1 µs (SQLite: 1 ms).
    assert seen[-1] - future <= timedelta(milliseconds=4)


@pytest.mark.parametrize("returning", [True, False], ids=["native", "fallback"])
async def test_update_and_insert_returning(
    maker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    returning: bool,
) -> None:
    if not returning:
        monkeypatch.setattr(engine.dialect, "update_returning", False)
        monkeypatch.setattr(engine.dialect, "insert_returning", False)
    async with maker() as session, session.begin():
        created = await sql.insert_returning(
            session, items, {"name": "a"}, (items.c.id, items.c.name, items.c.created)
        )
        assert created.name == "a"
        assert created.created is not None
        changed = await sql.update_returning(
            session,
            update(items).where(items.c.id == created.id).values(note="x"),
            (items.c.id, items.c.note),
            reread=(items.c.id == created.id,),
        )
        missing = await sql.update_returning(
            session,
            update(items).where(items.c.id == -1).values(note="x"),
            (items.c.id,),
            reread=(items.c.id == -1,),
        )
    assert [tuple(r) for r in changed] == [(created.id, "x")]
    assert missing == []


@pytest.mark.parametrize(
    "returning",
    [
        pytest.param(True, id="native"),
        pytest.param(
            False,
            id="fallback",
            marks=pytest.mark.only_on(
                "postgresql",
                "mysql",
                reason="the lock-then-update claim needs row locks, which SQLite has not "
                "(it always takes the one-statement claim)",
            ),
        ),
    ],
)
async def test_claim_takes_each_row_once(
    maker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    returning: bool,
) -> None:
    """Concurrent claimers split the due rows between them; none is claimed twice."""
    if not returning:
        monkeypatch.setattr(engine.dialect, "update_returning", False)
    async with maker() as session, session.begin():
        await session.execute(items.insert(), [{"name": f"n{i}"} for i in range(40)])

    async def claimer(owner: str) -> list[int]:
        mine: list[int] = []
        while True:
            async with maker() as session, session.begin():
                rows = await sql.claim(
                    session,
                    items,
                    select(items.c.id).where(items.c.owner.is_(None)).order_by(items.c.id).limit(3),
                    {"owner": owner},
                    (items.c.id, items.c.owner),
                )
            if not rows:
                return mine
            assert {r.owner for r in rows} == {owner}
            mine.extend(r.id for r in rows)

    claimed = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
    flat = [i for ids in claimed for i in ids]
    assert sorted(flat) == list(range(1, 41))


def test_scratch_table_uses_the_shared_types() -> None:
    """The scratch table exercises the same seam types the models use (not plain DateTime)."""
    assert not isinstance(items.c.at.type, DateTime)
    assert isinstance(items.c.at.type, UtcDateTime)


async def test_count_where_counts_per_group(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session, session.begin():
        await session.execute(
            items.insert(),
            [{"name": f"n{i}", "owner": "a" if i % 3 else "b"} for i in range(10)],
        )
        counts = (
            await session.execute(
                select(
                    sql.count_where(items.c.owner == "a"),
                    sql.count_where(items.c.owner == "b"),
                    sql.count_where(items.c.owner == "c"),
                )
            )
        ).one()
    assert tuple(counts) == (6, 4, 0)

"""Keys in the ``api_keys`` table (no Redis configured), served from an in-process copy.

Every process answers key checks from its copy of the table (no query per request) and keeps
it current:

* a key this process does not know is looked up in the table before it is refused (see
  :class:`~atrium.platform.apikeys.snapshot.MissResolver`), so a key created anywhere (another
  replica, ``atrium apikeys create``) works on its very first request, on every replica;
* a change made by this process reloads the copy at once; one made by another process on the
  same machine (the CLI against the embedded default) touches a marker file that every lookup
  ``stat``s, so it is seen on the next request too;
* anything else (a key revoked through another replica or machine) is found by a change check,
  one tiny query (``count(*)``, ``count(revoked)``) at most every ``CHANGE_CHECK_SECONDS``, in
  the background while requests keep coming; after a quiet spell the first request waits for
  it. A revocation therefore takes effect on every replica within about a second (two at
  most); the copy is also reloaded whole every ``FULL_RELOAD_SECONDS`` whatever the counts say.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import cast

from sqlalchemy import Integer, String, Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from atrium.platform.apikeys.model import ApiKey, iso
from atrium.platform.apikeys.snapshot import KeySnapshot, MissResolver
from atrium.platform.apikeys.store import KeyStore
from atrium.platform.db import Base
from atrium.platform.sqltypes import LongText, UtcDateTime, server_precise_now

log = logging.getLogger("atrium.apikeys")

CHANGE_CHECK_SECONDS = 1.0
FULL_RELOAD_SECONDS = 60.0


class ApiKeyRow(Base):
    """``api_keys``: the key store when no Redis is configured."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(LongText)
    scopes: Mapped[str] = mapped_column(LongText)
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(UtcDateTime, server_default=server_precise_now())
    revoked: Mapped[datetime | None] = mapped_column(UtcDateTime)

    def record(self) -> ApiKey:
        """As the storage-independent record."""
        return ApiKey(
            id=self.id,
            owner=self.owner,
            scopes=tuple(s for s in self.scopes.split(",") if s),
            rate_limit=self.rate_limit,
            created=iso(self.created) if self.created is not None else "",
            revoked=iso(self.revoked) if self.revoked is not None else None,
        )


_TABLE = cast(Table, ApiKeyRow.__table__)
# What a create or a revoke changes (the API never deletes or edits a row otherwise).
_CHANGE_COUNTS = select(func.count(), func.count(_TABLE.c.revoked)).select_from(_TABLE)


class SqlKeyStore(KeyStore):
    """Keys in the ``api_keys`` table, served from an in-process copy."""

    def __init__(self, engine: AsyncEngine, marker: Path | None = None) -> None:
        self.engine = engine
        self.marker = marker
        self._marker_seen: int | None = None
        self._counts: tuple[int, int] | None = None  # of the rows in the copy
        self._checked_at = -math.inf
        self._check: asyncio.Task[None] | None = None
        self.snapshot = KeySnapshot(self._load_all, FULL_RELOAD_SECONDS)
        self.misses = MissResolver(self._fetch)

    def _marker_mtime(self) -> int | None:
        if self.marker is None:
            return None
        try:
            return os.stat(self.marker).st_mtime_ns
        except OSError:
            return None

    def _touch_marker(self) -> None:
        if self.marker is None:
            return
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(str(time.time_ns()))
        except OSError:
            log.warning("cannot write the api-key change marker", extra={"path": str(self.marker)})

    async def _load_all(self) -> dict[str, ApiKey]:
        marker = self._marker_mtime()  # before reading: a change after it triggers another load
        async with self.engine.connect() as connection:
            rows = (await connection.execute(select(_TABLE))).all()
        by_hash = {row.key_hash: ApiKeyRow(**row._mapping).record() for row in rows}
        self._marker_seen = marker
        self._counts = (len(rows), sum(1 for row in rows if row.revoked is not None))
        self._checked_at = time.monotonic()
        self.misses.forget()
        return by_hash

    async def _fetch(self, hashes: list[str]) -> dict[str, ApiKey]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(_TABLE).where(_TABLE.c.key_hash.in_(hashes)))
            return {row.key_hash: ApiKeyRow(**row._mapping).record() for row in rows}

    async def load(self) -> None:
        """Read the whole table (it is small: one row per key)."""
        await self.snapshot.reload()

    async def _check_changes(self) -> None:
        self._checked_at = time.monotonic()
        try:
            async with self.engine.connect() as connection:
                counts = tuple((await connection.execute(_CHANGE_COUNTS)).one())
            if counts != self._counts or self.snapshot.age > FULL_RELOAD_SECONDS:
                await self.snapshot.reload()
        except Exception as exc:
            log.warning("api-key change check failed: %s", type(exc).__name__)

    async def _follow_changes(self) -> None:
        if self._marker_mtime() != self._marker_seen:
            await self.snapshot.reload()
            return
        quiet = time.monotonic() - self._checked_at
        if quiet < CHANGE_CHECK_SECONDS:
            return
        if self._check is None or self._check.done():
            self._check = asyncio.get_running_loop().create_task(self._check_changes())
        if quiet >= 2 * CHANGE_CHECK_SECONDS:
            # Nobody asked for a while, so the copy may be old: wait for the check.
            await asyncio.shield(self._check)

    async def lookup(self, key_hash: str) -> ApiKey | None:
        """From memory, current per the module docstring; the table for a key it lacks."""
        await self._follow_changes()
        record = self.snapshot.get(key_hash)
        if record is None:
            record = await self.misses.resolve(key_hash)
            if record is not None:
                self.snapshot.put(key_hash, record)
        return record

    async def insert(self, key_hash: str, record: ApiKey) -> None:
        """Insert a row with the key's hash."""
        async with self.engine.begin() as connection:
            await connection.execute(
                _TABLE.insert().values(
                    id=record.id,
                    key_hash=key_hash,
                    owner=record.owner,
                    scopes=",".join(record.scopes),
                    rate_limit=record.rate_limit,
                )
            )
        self._touch_marker()
        await self.load()

    async def list(self) -> list[ApiKey]:
        """Every row, oldest first."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(select(_TABLE).order_by(ApiKeyRow.created, ApiKeyRow.id))
            ).all()
        return [ApiKeyRow(**row._mapping).record() for row in rows]

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Set ``revoked``; effective here at once, on other replicas within a second or two."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked.is_(None))
                .values(revoked=func.now())
            )
            row = (await connection.execute(select(_TABLE).where(ApiKeyRow.id == key_id))).first()
        self._touch_marker()
        await self.load()
        return ApiKeyRow(**row._mapping).record() if row is not None else None

    async def warm(self) -> None:
        """Load the table (at start-up)."""
        try:
            await self.load()
        except Exception:
            log.warning("could not load the api keys yet (not migrated?)", exc_info=True)

    def reset(self) -> None:
        """Forget the in-memory copy (the next lookup reloads)."""
        self.snapshot.clear()
        self.misses.forget()
        self._marker_seen = None
        self._counts = None
        self._checked_at = -math.inf

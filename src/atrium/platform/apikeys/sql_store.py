"""Keys in the ``api_keys`` table (no Redis configured), served from an in-process copy.

A change made by this process reloads the copy at once; one made by another process on the
same machine (the CLI against the embedded default) touches a marker file that every lookup
``stat``s, so it is seen on the next request too; anything else (PostgreSQL without Redis,
several machines) is picked up by a reload every few seconds. An unknown key triggers a
reload, at most once a second, so a key created elsewhere works without letting random keys
hammer the database.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import cast

from sqlalchemy import DateTime, Integer, String, Table, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from atrium.platform.apikeys.model import ApiKey, generate_key, hash_key, iso
from atrium.platform.apikeys.snapshot import KeySnapshot
from atrium.platform.apikeys.store import KeyStore
from atrium.platform.db import Base

log = logging.getLogger("atrium.apikeys")

SNAPSHOT_REFRESH_SECONDS = 5.0
UNKNOWN_KEY_RELOAD_SECONDS = 1.0


class ApiKeyRow(Base):
    """``api_keys``: the key store when no Redis is configured."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(Text)
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

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


class SqlKeyStore(KeyStore):
    """Keys in the ``api_keys`` table, served from an in-process copy."""

    def __init__(self, engine: AsyncEngine, marker: Path | None = None) -> None:
        self.engine = engine
        self.marker = marker
        self._marker_seen: int | None = None
        self.snapshot = KeySnapshot(self._load_all, SNAPSHOT_REFRESH_SECONDS)

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
        return by_hash

    async def load(self) -> None:
        """Read the whole table (it is small: one row per key)."""
        await self.snapshot.reload()

    async def lookup(self, key_hash: str) -> ApiKey | None:
        """From memory; reload first when another process changed the table."""
        if self._marker_mtime() != self._marker_seen:
            await self.snapshot.reload()
        else:
            self.snapshot.refresh_if_stale()
        record = self.snapshot.get(key_hash)
        if record is None and self.snapshot.age > UNKNOWN_KEY_RELOAD_SECONDS:
            # somebody reloaded a moment ago; do not let unknown keys hammer the DB
            await self.snapshot.reload(unless_within=UNKNOWN_KEY_RELOAD_SECONDS)
            record = self.snapshot.get(key_hash)
        return record

    async def create(
        self,
        owner: str,
        scopes: Sequence[str],
        rate_limit: int | None = None,
        key: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Insert a row with the key's hash."""
        key = key or generate_key()
        record = ApiKey.new(owner, scopes, rate_limit)
        async with self.engine.begin() as connection:
            await connection.execute(
                _TABLE.insert().values(
                    id=record.id,
                    key_hash=hash_key(key),
                    owner=owner,
                    scopes=",".join(record.scopes),
                    rate_limit=rate_limit,
                )
            )
        self._touch_marker()
        await self.load()
        return key, record

    async def list(self) -> list[ApiKey]:
        """Every row, oldest first."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(select(_TABLE).order_by(ApiKeyRow.created, ApiKeyRow.id))
            ).all()
        return [ApiKeyRow(**row._mapping).record() for row in rows]

    async def revoke(self, key_id: str) -> ApiKey | None:
        """Set ``revoked``; effective for this process at once, for others per the above."""
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
        self._marker_seen = None

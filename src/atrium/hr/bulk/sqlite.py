"""SQLite: the portable loader, plus SQLite's early write lock and deferred foreign keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from atrium.hr.bulk.base import RowsOf, table_of
from atrium.hr.bulk.portable import PortableLoader
from atrium.hr.errors import RestoreConflict
from atrium.hr.rows import TABLE_NAMES, TABLES, TableSpec


class SQLiteLoader(PortableLoader):
    """The embedded default's loader."""

    async def prepare_write(self, session: AsyncSession, spec: TableSpec) -> None:
        """Take the write lock now (waiting on busy_timeout), instead of failing with
        SQLITE_BUSY when a read transaction later tries to become a writer."""
        await session.execute(text(f"DELETE FROM {spec.name} WHERE 0"))  # noqa: S608

    async def restore(
        self, connection: AsyncConnection, spools: Mapping[str, IO[bytes]], rows_of: RowsOf
    ) -> dict[str, int]:
        """Empty and reload with foreign keys checked once, at the end (``defer_foreign_keys``
        and ``foreign_key_check``): tables may be emptied in any order."""
        # A write opens the transaction first: the pragma lasts until that transaction ends.
        await connection.execute(text("DELETE FROM departments WHERE 0"))
        await connection.execute(text("PRAGMA defer_foreign_keys = ON"))
        for name in reversed(TABLE_NAMES):
            if name in spools:
                await connection.execute(delete(table_of(TABLES[name])))
        counts = await self.load_spools(connection, spools, rows_of)
        violations = (await connection.execute(text("PRAGMA foreign_key_check"))).all()
        if violations:
            first = violations[0]
            raise RestoreConflict(
                f"restoring {', '.join(spools)} would leave {len(violations)} row(s) of "
                f"{first[0]} naming missing {first[2]} (e.g. rowid {first[1]}); restore the "
                "referenced tables too. Nothing was changed."
            )
        return counts

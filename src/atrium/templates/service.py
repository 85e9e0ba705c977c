"""Rules of the templates domain: CRUD, representations, entity tags and preconditions.

Conditional writes are optimistic: the precondition is checked against the current row and
the UPDATE/DELETE then only applies while ``modified`` still has the value that was checked
(``modified`` strictly increases on every update, see the migration), so two clients holding
the same ETag cannot both win — the second gets 412 instead of silently overwriting.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.platform.conditional import etag_of, if_match_holds
from atrium.platform.errors import NotFound, PreconditionFailed
from atrium.platform.sql import insert_returning, next_timestamp, update_returning
from atrium.templates.models import Template
from atrium.templates.schemas import TemplateIn


class TemplateNotFound(NotFound):
    """No template has this id."""


class StaleTemplate(PreconditionFailed):
    """The template changed since the client read it (``If-Match`` failed)."""


def representation(row: Template) -> dict[str, Any]:
    """The JSON object of a template (the one shape every endpoint returns)."""
    return {
        "tidx": row.tidx,
        "templateid": str(row.templateid),
        "name": row.name,
        "description": row.description,
        "content": row.content,
        "created": row.created,
        "modified": row.modified,
    }


def encode(row: Template) -> bytes:
    """The response body of a template."""
    return orjson.dumps(representation(row), option=orjson.OPT_UTC_Z)


async def create(session: AsyncSession, data: TemplateIn) -> Template:
    """Insert a template; the database fills ``created`` and ``modified``."""
    row = await insert_returning(session, Template, data.model_dump(), (Template,))
    created: Template = row[0]
    return created


async def get(session: AsyncSession, templateid: uuid.UUID) -> Template | None:
    """One template by its public id."""
    return await session.scalar(select(Template).where(Template.templateid == templateid))


async def list_page(
    session: AsyncSession, *, name: str | None, limit: int, offset: int
) -> tuple[list[Template], int]:
    """A page ordered by ``tidx`` and the number of matches over all pages."""
    conditions = [Template.name == name] if name is not None else []
    total = await session.scalar(select(func.count()).select_from(Template).where(*conditions))
    rows = await session.scalars(
        select(Template).where(*conditions).order_by(Template.tidx).limit(limit).offset(offset)
    )
    return list(rows), int(total or 0)


async def _checked_current(
    session: AsyncSession, templateid: uuid.UUID, if_match: str | None
) -> Template | None:
    """The row an ``If-Match`` was checked against (``None`` without the header)."""
    if if_match is None:
        return None
    current = await get(session, templateid)
    if current is None:
        raise TemplateNotFound(f"template {templateid} does not exist")
    if not if_match_holds(if_match, etag_of(encode(current))):
        raise StaleTemplate("the template changed since you read it (If-Match failed)")
    return current


async def _not_found_or_stale(session: AsyncSession, templateid: uuid.UUID) -> Exception:
    if await get(session, templateid) is None:
        return TemplateNotFound(f"template {templateid} does not exist")
    return StaleTemplate("the template changed while this request ran (If-Match failed)")


async def update_fields(
    session: AsyncSession,
    templateid: uuid.UUID,
    changes: Mapping[str, str],
    *,
    if_match: str | None = None,
) -> Template:
    """Change some fields (all of them for PUT); ``modified`` moves forward in any case."""
    current = await _checked_current(session, templateid, if_match)
    conditions = [Template.templateid == templateid]
    if current is not None:
        conditions.append(Template.modified == current.modified)
    # The statement moves ``modified`` itself (also for an empty PATCH), so the new value is
    # what RETURNING or the re-read sees on every engine.
    values: dict[str, Any] = {**changes, "modified": next_timestamp(Template.modified)}
    statement = (
        update(Template)
        .where(*conditions)
        .values(**values)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    rows = await update_returning(
        session, statement, (Template,), reread=(Template.templateid == templateid,)
    )
    if not rows:
        raise (
            await _not_found_or_stale(session, templateid)
            if current
            else TemplateNotFound(f"template {templateid} does not exist")
        )
    updated: Template = rows[0][0]
    return updated


async def remove(
    session: AsyncSession, templateid: uuid.UUID, *, if_match: str | None = None
) -> None:
    """Delete a template."""
    current = await _checked_current(session, templateid, if_match)
    conditions = [Template.templateid == templateid]
    if current is not None:
        conditions.append(Template.modified == current.modified)
    result = await session.execute(
        delete(Template).where(*conditions).execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        if current is not None:
            raise await _not_found_or_stale(session, templateid)
        raise TemplateNotFound(f"template {templateid} does not exist")

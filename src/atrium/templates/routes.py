"""HTTP endpoints of the templates domain (thin: parse, call the service, shape the response).

Reads go through the platform cache as finished response bodies with their ETag, so a hit
costs one Redis round trip and no database, ORM or JSON work. Writes bump the cache before
the request's boundary commits and again after it, which keeps every process from reading
stale data (see :meth:`atrium.platform.cache.Cache.invalidate_after_commit`).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from atrium.platform.cache import Cache
from atrium.platform.conditional import (
    etag_of,
    if_none_match_hits,
    pack_representation,
    unpack_representation,
)
from atrium.platform.db import SessionDep, after_commit
from atrium.platform.errors import problem_responses
from atrium.platform.guard import CachedRead
from atrium.platform.idempotency import DOC as IDEMPOTENCY_DOC
from atrium.templates import service
from atrium.templates.schemas import (
    NAME_MAX,
    NO_NUL,
    TemplateIn,
    TemplateOut,
    TemplatePage,
    TemplatePatch,
)

router = APIRouter(prefix="/templates", tags=["templates"])

LIST_NAMESPACE = "templates:list"
JSON = "application/json"
MAX_OFFSET = 2_147_483_647

_ETAG_HEADER = {
    "ETag": {"description": "Entity tag of the representation.", "schema": {"type": "string"}}
}
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified (If-None-Match)"}
}
_PRECONDITION = (
    " Send `If-Match` with the ETag you read: if the template changed since, the answer is 412"
    " and nothing is written."
)


def _namespace(templateid: uuid.UUID) -> str:
    return f"template:{templateid}"


def _locate(match: re.Match[str]) -> tuple[str, str] | None:
    try:
        templateid = uuid.UUID(match["templateid"])
    except ValueError:
        return None  # the route answers 422
    return _namespace(templateid), "one"


# Cache hits of GET /templates/{templateid} are answered by the front door itself, in the same
# Redis round trip as the key check and the rate limit (see atrium.platform.guard.CachedRead).
CACHED_READS = (
    CachedRead(
        # Only the spellings the route itself accepts (else it answers 422, not us).
        path=re.compile(
            r"/templates/(?P<templateid>[0-9A-Fa-f]{32}"
            r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
        ),
        route="/templates/{templateid}",
        scope="templates:read",
        cache_name="templates",
        locate=_locate,
    ),
)


def _cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache.named("templates")


def _respond(
    request: Request, etag: str, body: bytes, status: int = 200, **headers: str
) -> Response:
    if status == 200:
        header = request.headers.get("if-none-match")
        if header is not None and if_none_match_hits(header, etag):
            return Response(status_code=304, headers={"ETag": etag})
    return Response(body, status_code=status, media_type=JSON, headers={"ETag": etag, **headers})


async def _invalidate(session: AsyncSession, cache: Cache, *namespaces: str) -> None:
    # Bump now (an unreachable cache: 503 before anything is committed) and again once the
    # request's boundary has committed (by SessionDep, or by the idempotency middleware
    # together with the response it stores).
    await cache.invalidate(*namespaces)

    async def bump_again() -> None:
        await cache.invalidate_after_commit(*namespaces)

    after_commit(session, bump_again)


@router.post(
    "",
    status_code=201,
    summary="Create a template",
    response_model=TemplateOut,
    responses={
        201: {
            "headers": {
                "Location": {
                    "description": "URL of the new template.",
                    "schema": {"type": "string"},
                },
                **_ETAG_HEADER,
            }
        },
        **problem_responses(409, 503),
    },
    description="Create a template; the answer is the full record. " + IDEMPOTENCY_DOC,
)
async def create_template(body: TemplateIn, request: Request, session: SessionDep) -> Response:
    """Create a template."""
    row = await service.create(session, body)
    await _invalidate(session, _cache(request), LIST_NAMESPACE)
    data = service.encode(row)
    return _respond(request, etag_of(data), data, 201, Location=f"/templates/{row.templateid}")


@router.get(
    "",
    summary="List templates",
    response_model=TemplatePage,
    responses={200: {"headers": _ETAG_HEADER}, **_NOT_MODIFIED},
)
async def list_templates(
    request: Request,
    name: Annotated[
        str | None, Query(max_length=NAME_MAX, pattern=NO_NUL, description="Exact name to match.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Templates to skip.")] = 0,
) -> Response:
    """Templates ordered by ``tidx``, optionally only those with a given name."""
    key = hashlib.sha256(orjson.dumps([name, limit, offset])).hexdigest()

    async def load() -> bytes:
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        async with maker() as session:
            rows, total = await service.list_page(session, name=name, limit=limit, offset=offset)
        page = {
            "items": [service.representation(row) for row in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
        return pack_representation(orjson.dumps(page, option=orjson.OPT_UTC_Z))

    packed = await _cache(request).get_or_load(LIST_NAMESPACE, key, load, bytes, bytes)
    assert packed is not None
    return _respond(request, *unpack_representation(packed))


@router.get(
    "/{templateid}",
    summary="Get a template",
    response_model=TemplateOut,
    responses={200: {"headers": _ETAG_HEADER}, **_NOT_MODIFIED, **problem_responses(404)},
    description="One template. Send `If-None-Match` with a known ETag to get 304 when unchanged.",
)
async def get_template(templateid: uuid.UUID, request: Request) -> Response:
    """One template by id (cached; a hit touches no database)."""

    async def load() -> bytes | None:
        # A session of our own, opened only on a miss: a hit must not pay for one.
        maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        async with maker() as session:
            row = await service.get(session, templateid)
        return None if row is None else pack_representation(service.encode(row))

    packed = await _cache(request).get_or_load(_namespace(templateid), "one", load, bytes, bytes)
    if packed is None:
        raise service.TemplateNotFound(f"template {templateid} does not exist")
    return _respond(request, *unpack_representation(packed))


async def _update(
    request: Request,
    session: AsyncSession,
    templateid: uuid.UUID,
    changes: dict[str, str],
) -> Response:
    row = await service.update_fields(
        session, templateid, changes, if_match=request.headers.get("if-match")
    )
    await _invalidate(session, _cache(request), _namespace(templateid), LIST_NAMESPACE)
    data = service.encode(row)
    return _respond(request, etag_of(data), data, 200)


@router.put(
    "/{templateid}",
    summary="Replace a template",
    response_model=TemplateOut,
    responses={200: {"headers": _ETAG_HEADER}, **problem_responses(404, 412, 503)},
    description="Replace every field (omitted ones become empty)." + _PRECONDITION,
)
async def replace_template(
    templateid: uuid.UUID, body: TemplateIn, request: Request, session: SessionDep
) -> Response:
    """Replace a template."""
    return await _update(request, session, templateid, body.model_dump())


@router.patch(
    "/{templateid}",
    summary="Change some fields of a template",
    response_model=TemplateOut,
    responses={200: {"headers": _ETAG_HEADER}, **problem_responses(404, 412, 503)},
    description="Change only the fields present in the body." + _PRECONDITION,
)
async def patch_template(
    templateid: uuid.UUID, body: TemplatePatch, request: Request, session: SessionDep
) -> Response:
    """Change some fields of a template."""
    return await _update(
        request, session, templateid, body.model_dump(include=body.model_fields_set)
    )


@router.delete(
    "/{templateid}",
    status_code=204,
    summary="Delete a template",
    response_class=Response,
    responses=problem_responses(404, 412, 503),
    description="Delete a template." + _PRECONDITION,
)
async def delete_template(templateid: uuid.UUID, request: Request, session: SessionDep) -> Response:
    """Delete a template."""
    await service.remove(session, templateid, if_match=request.headers.get("if-match"))
    await _invalidate(session, _cache(request), _namespace(templateid), LIST_NAMESPACE)
    return Response(status_code=204)

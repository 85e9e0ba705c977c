"""Typed errors and their one rendering: ``application/problem+json`` (RFC 9457).

Domains raise subclasses of :class:`AtriumError`; the handlers installed by
:func:`install_error_handlers` turn those, validation failures, HTTP errors and anything
unexpected into a problem document with a stable ``type``. No stack trace reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import Scope, Send

from atrium.platform.dbconflict import contention

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://atrium.dev/problems/"
# Scope flag: the request middleware already logged this exception with the request's context.
EXCEPTION_LOGGED = "atrium.exception_logged"

log = logging.getLogger("atrium.errors")


def problem_type(slug: str) -> str:
    """The stable ``type`` URI of a problem kind."""
    return PROBLEM_BASE + slug


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of this API is shaped."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://atrium.dev/problems/not-found",
                    "title": "Not Found",
                    "status": 404,
                    "detail": "department 7 does not exist",
                    "instance": "/hr/departments/7",
                }
            ]
        },
    )

    type: str = Field(description="Stable URI naming the kind of problem.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong this time.")
    instance: str | None = Field(default=None, description="The request path.")


class AtriumError(Exception):
    """Base of every error a client may see; subclasses fix ``status`` and ``slug``."""

    status: int = 400
    slug: str = "bad-request"
    title: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.default_title())
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    @classmethod
    def default_title(cls) -> str:
        """The title of this kind: explicit, else the HTTP reason phrase."""
        return cls.title or HTTPStatus(cls.status).phrase


class BadRequest(AtriumError):
    status, slug = 400, "bad-request"


class Unauthorized(AtriumError):
    status, slug = 401, "unauthorized"


class Forbidden(AtriumError):
    status, slug = 403, "forbidden"


class NotFound(AtriumError):
    status, slug = 404, "not-found"


class Conflict(AtriumError):
    status, slug = 409, "conflict"


class PreconditionFailed(AtriumError):
    status, slug = 412, "precondition-failed"


class PayloadTooLarge(AtriumError):
    status, slug = 413, "payload-too-large"


class UnsupportedMediaType(AtriumError):
    status, slug = 415, "unsupported-media-type"


class NotAcceptable(AtriumError):
    status, slug = 406, "not-acceptable"


class Unprocessable(AtriumError):
    status, slug, title = 422, "validation-error", "Request validation failed"


class ConcurrentUpdate(Conflict):
    """The database rolled this request back to resolve a clash with a concurrent one."""

    slug, title = "concurrent-update", "Concurrent update"


class DatabaseBusy(AtriumError):
    """A lock the request needed stayed taken for too long; nothing was stored."""

    status, slug, title = 503, "database-busy", "Database busy"


class TooManyRequests(AtriumError):
    status, slug = 429, "rate-limited"


class ServiceUnavailable(AtriumError):
    status, slug = 503, "unavailable"


class UpstreamError(AtriumError):
    status, slug, title = 502, "upstream-error", "Upstream service failed"


_SLUG_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    500: "internal-error",
    503: "unavailable",
}


def slug_for_status(status: int) -> str:
    """The problem slug used for a bare HTTP status."""
    return _SLUG_BY_STATUS.get(status, f"http-{status}")


def problem_response(
    request: Request | None,
    status: int,
    slug: str,
    *,
    title: str | None = None,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """Render one problem document."""
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    if extra:
        body.update(extra)
    return Response(
        orjson.dumps(body, default=str),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers or {}),
    )


async def send_problem(
    scope: Scope,
    send: Send,
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with a problem document from inside a pure ASGI middleware."""
    body = orjson.dumps(
        {
            "type": problem_type(slug),
            "title": title,
            "status": status,
            "detail": detail,
            "instance": scope.get("path", ""),
        }
    )
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if isinstance(headers, Mapping):
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    else:
        raw += list(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_unavailable(scope: Scope, send: Send, what: str) -> None:
    """503 with ``Retry-After: 1`` from a pure ASGI middleware: ``what`` cannot be reached."""
    await send_problem(
        scope,
        send,
        503,
        "unavailable",
        "Service Unavailable",
        f"{what} cannot be reached; retry shortly",
        {"Retry-After": "1"},
    )


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # The offending input is deliberately not echoed: it may be a password or a private key.
    out = []
    for error in errors:
        out.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return out


async def _atrium_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AtriumError)
    return problem_response(
        request,
        exc.status,
        exc.slug,
        title=exc.default_title(),
        detail=exc.detail,
        headers=exc.headers,
        extra=exc.extra,
    )


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc.errors())
    malformed = any(e["type"] == "json_invalid" for e in errors)
    return problem_response(
        request,
        422,
        "malformed-json" if malformed else "validation-error",
        title="Malformed JSON body" if malformed else "Request validation failed",
        detail="; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5]),
        extra={"errors": errors},
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == HTTPStatus(exc.status_code).phrase:
        detail = None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    return problem_response(
        request,
        exc.status_code,
        slug_for_status(exc.status_code),
        detail=detail,
        headers=headers,  # keeps ``Allow`` on 405 and ``WWW-Authenticate`` on 401
    )


def _allowed_methods(request: Request) -> str:
    # Starlette answers 405 with the methods of the first route whose path matched; a path
    # served by several routes (GET and PATCH and DELETE of /things/{id}) allows them all. Ask
    # the router which methods would fully match this path.
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        probe = {
            "type": "http",
            "path": request.scope["path"],
            "root_path": request.scope.get("root_path", ""),
            "method": method,
            "headers": [],
            "query_string": b"",
        }
        if any(
            route.matches(probe)[0] == Match.FULL
            for route in request.app.router.routes
            if not isinstance(route, Mount)  # static files: they answer 405 on their own
        ):
            allowed.append(method)
    return ", ".join(allowed)


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # The client left before its body was whole: nothing ran, and nobody reads this answer.
    log.info("request body incomplete: client disconnected", extra={"path": request.url.path})
    return problem_response(
        request, 400, "bad-request", detail="the request body ended before its declared end"
    )


async def _stale_data(request: Request, exc: Exception) -> Response:
    # The unit of work's UPDATE/DELETE matched no row: another request deleted it meanwhile.
    log.info("row deleted by a concurrent request", extra={"path": request.url.path})
    return problem_response(
        request, 404, "not-found", detail="it was deleted by another request while this one ran"
    )


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    kind = contention(exc)
    if kind is None:
        return await _unhandled(request, exc)
    log.warning("concurrent write refused", extra={"path": request.url.path, "kind": kind})
    error: AtriumError
    if kind == "deadlock":
        error = ConcurrentUpdate(
            "another request changed the same data at the same time; nothing was stored, retry",
            headers={"Retry-After": "1"},
        )
    else:
        error = DatabaseBusy(
            "the data is locked by other requests; nothing was stored, retry shortly",
            headers={"Retry-After": "1"},
        )
    return await _atrium_error(request, error)


async def _unhandled(request: Request, exc: Exception) -> Response:
    if not request.scope.get(EXCEPTION_LOGGED):
        log.exception("unhandled error", extra={"path": request.url.path})
    return problem_response(request, 500, "internal-error", detail="An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of failure through the problem renderer."""
    app.add_exception_handler(AtriumError, _atrium_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(StaleDataError, _stale_data)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unhandled)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem documents for the given statuses."""
    content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {
        status: {"description": HTTPStatus(status).phrase, "content": content}
        for status in statuses
    }

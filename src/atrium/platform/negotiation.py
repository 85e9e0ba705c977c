"""JSON-only content negotiation, as a reusable dependency.

* A request body whose ``Content-Type`` is not JSON (``application/json`` or ``…+json``) → 415.
* An ``Accept`` header that rules out JSON (``text/html`` alone, ``application/json;q=0``) → 406.
  ``*/*``, ``application/*``, ``application/json`` and ``application/problem+json`` are fine;
  a missing or unparsable ``Accept`` means "anything".

Both answers are problem documents. Use :data:`JsonOnly` on routers that take and return JSON,
:data:`AcceptJson` where the body has another format by design (OAuth2's form-encoded login).
"""

from __future__ import annotations

from fastapi import Depends, Request

from atrium.platform.errors import NotAcceptable, UnsupportedMediaType

# What our responses may be: JSON for results, problem+json for errors.
_PRODUCED = (("application", "json"), ("application", "problem+json"))
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json_media_type(content_type: str) -> bool:
    """True for ``application/json`` and ``application/<anything>+json`` (parameters ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _parse_accept(header: str) -> list[tuple[str, str, float]]:
    ranges = []
    for part in header.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        kind, slash, subtype = media.lower().partition("/")
        if not slash or not kind or not subtype:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 1.0
        ranges.append((kind, subtype, quality))
    return ranges


def accepts_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header lets us answer with JSON (RFC 9110 §12.5.1 precedence)."""
    if accept is None or not accept.strip():
        return True
    ranges = _parse_accept(accept)
    if not ranges:
        return True  # nothing parsable: behave as if the header were absent
    for kind, subtype in _PRODUCED:
        best: tuple[int, float] | None = None  # (specificity, q) of the most specific match
        for r_kind, r_subtype, quality in ranges:
            if r_kind == kind and r_subtype == subtype:
                specificity = 2
            elif r_kind == kind and r_subtype == "*":
                specificity = 1
            elif r_kind == "*" and r_subtype == "*":
                specificity = 0
            else:
                continue
            if best is None or specificity > best[0]:
                best = (specificity, quality)
        if best is not None and best[1] > 0:
            return True
    return False


async def require_json_response(request: Request) -> None:
    """406 unless the client accepts a JSON answer."""
    if not accepts_json(request.headers.get("accept")):
        raise NotAcceptable("this endpoint answers with application/json only")


async def require_json(request: Request) -> None:
    """406 unless the client accepts JSON; 415 when it sends a body that is not JSON."""
    await require_json_response(request)
    if request.method not in _BODY_METHODS:
        return
    content_type = request.headers.get("content-type")
    if content_type is not None:
        if not is_json_media_type(content_type):
            raise UnsupportedMediaType("request bodies must be application/json")
        return
    length = request.headers.get("content-length")
    has_body = "transfer-encoding" in request.headers or (length is not None and length != "0")
    if has_body:
        raise UnsupportedMediaType("request bodies must be application/json")


JsonOnly = Depends(require_json)
AcceptJson = Depends(require_json_response)

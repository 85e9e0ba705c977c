"""Entity tags and conditional requests (RFC 9110 §13), shared by every domain."""

from __future__ import annotations

import hashlib


def etag_of(body: bytes) -> str:
    """A strong entity tag of a representation."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def if_match_holds(header: str, etag: str) -> bool:
    """``If-Match`` (strong comparison; ``*`` matches any current representation)."""
    tags = _tags(header)
    return "*" in tags or etag in tags


def if_none_match_hits(header: str, etag: str) -> bool:
    """``If-None-Match`` (weak comparison): True means answer 304 Not Modified."""
    tags = _tags(header)
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


def pack_representation(body: bytes) -> bytes:
    """A cache value: a finished JSON body and its ETag (see :func:`unpack_representation`)."""
    return etag_of(body).encode() + b"\n" + body


def unpack_representation(value: bytes) -> tuple[str, bytes]:
    """``(etag, body)`` of a :func:`pack_representation` value."""
    etag, _, body = value.partition(b"\n")
    return etag.decode(), body

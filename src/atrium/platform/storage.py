"""Blob storage for files Atrium writes (HR backups today): a small async interface.

:class:`BlobStore` is what callers use; :class:`LocalBlobStore` keeps blobs as files under a
folder. An object-store implementation (S3: ``ATRIUM_BACKUP_URL=s3://bucket/prefix``) only has
to provide the same six methods; the contract is written so that one can be thin:

* Keys are relative, ``/``-separated paths (``20211107T024842Z-3fa85f64/jobs.avro``). Each
  segment is ``[A-Za-z0-9._-]``, not ``.``/``..``: a key can never leave the store's root.
* A blob becomes visible only complete: :meth:`BlobStore.open_write` publishes on a clean
  exit and discards on an exception (local: write to a temporary name, fsync, rename;
  S3: a multipart upload completed on exit, aborted on error). Readers never see half a blob.
* There are no directories: :meth:`BlobStore.list_prefixes` lists the distinct first
  segments below a prefix, like S3's ``ListObjectsV2`` with ``Delimiter='/'``.
* Methods are ``async``; a local implementation runs blocking file calls in a worker thread
  so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
READ_CHUNK = 1 << 20


class BlobNotFound(LookupError):
    """No blob has this key."""


class BlobWriter(Protocol):
    """The sink :meth:`BlobStore.open_write` yields: append bytes, in order."""

    async def write(self, data: bytes) -> None:
        """Append ``data`` to the blob being written."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Where blobs live. Every method may raise ``OSError`` for storage failures."""

    def open_write(self, key: str) -> AbstractAsyncContextManager[BlobWriter]:
        """``async with store.open_write(key) as out: await out.write(b"...")`` — the blob
        appears under ``key`` (replacing any previous one) only when the block exits cleanly."""
        ...

    def open_read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The blob's bytes as a stream of chunks; :class:`BlobNotFound` if absent."""
        ...

    async def write_bytes(self, key: str, data: bytes) -> None:
        """Store a small blob in one call (same atomicity as :meth:`open_write`)."""
        ...

    async def read_bytes(self, key: str) -> bytes:
        """A small blob, whole; :class:`BlobNotFound` if absent."""
        ...

    async def exists(self, key: str) -> bool:
        """True when a complete blob has this key."""
        ...

    async def list_prefixes(self, prefix: str = "") -> list[str]:
        """Sorted distinct next segments of keys under ``prefix`` ("" or ending in ``/``)."""
        ...


def check_key(key: str) -> str:
    """``key`` if it is a safe relative key, else ``ValueError`` (no traversal, no oddities)."""
    segments = key.split("/")
    if not key or not all(_SEGMENT.match(s) and s not in {".", ".."} for s in segments):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class _LocalWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._handle.write, data)


class LocalBlobStore:
    """Blobs as files under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    @asynccontextmanager
    async def open_write(self, key: str) -> AsyncIterator[BlobWriter]:
        """Write to ``<name>.<random>.tmp`` beside the target, fsync, then rename over it."""
        path = self._path(key)
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        handle = await asyncio.to_thread(temporary.open, "wb")
        try:
            yield _LocalWriter(handle)
            await asyncio.to_thread(_sync_close, handle)
            await asyncio.to_thread(os.replace, temporary, path)
            await asyncio.to_thread(_fsync_dir, path.parent)
        except BaseException:
            handle.close()
            temporary.unlink(missing_ok=True)
            raise

    async def open_read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """Stream the file in chunks, reading in a worker thread."""
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` atomically under ``key``."""
        async with self.open_write(key) as out:
            await out.write(data)

    async def read_bytes(self, key: str) -> bytes:
        """The whole file."""
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    async def exists(self, key: str) -> bool:
        """True for a complete (renamed into place) file."""
        return await asyncio.to_thread(self._path(key).is_file)

    async def list_prefixes(self, prefix: str = "") -> list[str]:
        """Entries directly under ``prefix`` (temporary files excluded)."""
        folder = self._path(prefix.rstrip("/")) if prefix else self.root

        def _list() -> list[str]:
            if not folder.is_dir():
                return []
            return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

        return await asyncio.to_thread(_list)


def _sync_close(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

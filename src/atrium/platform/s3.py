"""S3-compatible object storage behind :class:`~atrium.platform.storage.BlobStore`.

Selected by ``ATRIUM_BACKUP_URL=s3://bucket/prefix``; endpoint, region and credentials come
from the standard AWS variables (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance/pod roles), so the same
image talks to AWS S3, MinIO or any S3-compatible store. Replicas share no disk: a backup made
through one replica is listed and restored through any other.

boto3 is synchronous and its clients are thread-safe: every call runs in a worker thread so
the event loop keeps serving. A blob becomes visible only complete: small blobs are one
``PutObject``; larger ones a multipart upload completed on a clean exit and aborted on error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlparse

from atrium.platform.errors import ServiceUnavailable
from atrium.platform.storage import READ_CHUNK, BlobNotFound, BlobWriter, check_key

# S3's smallest part (except the last) is 5 MiB; 8 MiB parts keep a 4 GiB backup file
# under 600 parts (the limit is 10 000).
PART_SIZE = 8 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
T = TypeVar("T")


class ObjectStoreError(ServiceUnavailable, OSError):
    """The object store refused or failed a request: an ``OSError`` (the storage contract)
    that clients see as a 503 problem, never a bare 500."""

    slug, title = "object-store-unavailable", "Object store unavailable"


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"backup URL must look like s3://bucket/prefix, got {url!r}")
    prefix = parsed.path.strip("/")
    if prefix:
        check_key(prefix)
    return parsed.netloc, prefix


def _code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class _S3Writer:
    """Buffers up to one part; uploads parts as they fill."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= self._store.part_size:
            part = bytes(self._buffer[: self._store.part_size])
            del self._buffer[: self._store.part_size]
            await self._upload_part(part)

    async def _upload_part(self, data: bytes) -> None:
        store = self._store
        if self._upload_id is None:
            created = await store._call(
                store.client.create_multipart_upload, Bucket=store.bucket, Key=self._key
            )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        uploaded = await store._call(
            store.client.upload_part,
            Bucket=store.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": uploaded["ETag"]})

    async def publish(self) -> None:
        store = self._store
        if self._upload_id is None:
            await store._call(
                store.client.put_object,
                Bucket=store.bucket,
                Key=self._key,
                Body=bytes(self._buffer),
            )
            return
        if self._buffer:
            await self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        await store._call(
            store.client.complete_multipart_upload,
            Bucket=store.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    async def discard(self) -> None:
        if self._upload_id is not None:
            store = self._store
            await store._call(
                store.client.abort_multipart_upload,
                Bucket=store.bucket,
                Key=self._key,
                UploadId=self._upload_id,
            )


class S3BlobStore:
    """Blobs as objects ``<prefix>/<key>`` in ``bucket``."""

    def __init__(
        self, bucket: str, prefix: str = "", *, client: Any = None, part_size: int = PART_SIZE
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 parts are at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.client = client if client is not None else _default_client()

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        """The store ``s3://bucket/prefix`` names, with the standard AWS configuration."""
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix)

    def _object_key(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, method: Callable[..., T], /, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(method, **kwargs)
        except Exception as exc:
            if _code(exc) in _NOT_FOUND:
                raise BlobNotFound(kwargs.get("Key", "")) from exc
            if isinstance(exc, OSError):
                raise
            raise ObjectStoreError(f"s3://{self.bucket}: {exc}") from exc

    @asynccontextmanager
    async def open_write(self, key: str) -> AsyncIterator[BlobWriter]:
        """Buffer to one part, upload parts as they fill; publish on exit, abort on error."""
        writer = _S3Writer(self, self._object_key(key))
        try:
            yield writer
        except BaseException:
            await asyncio.shield(writer.discard())
            raise
        await writer.publish()

    async def open_read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """Stream the object's body in chunks."""
        response = await self._call(
            self.client.get_object, Bucket=self.bucket, Key=self._object_key(key)
        )
        body = response["Body"]
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(body.read, chunk_size)
                except Exception as exc:
                    raise ObjectStoreError(f"s3://{self.bucket}: {exc}") from exc
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    async def write_bytes(self, key: str, data: bytes) -> None:
        """One ``PutObject`` (atomic by S3's semantics), or a multipart upload when large."""
        async with self.open_write(key) as out:
            await out.write(data)

    async def read_bytes(self, key: str) -> bytes:
        """The whole object."""
        return b"".join([chunk async for chunk in self.open_read(key)])

    async def exists(self, key: str) -> bool:
        """``HeadObject`` answers (only completed uploads are objects)."""
        try:
            await self._call(self.client.head_object, Bucket=self.bucket, Key=self._object_key(key))
        except BlobNotFound:
            return False
        return True

    async def list_prefixes(self, prefix: str = "") -> list[str]:
        """Distinct next segments under ``prefix`` (``ListObjectsV2`` with ``Delimiter='/'``)."""
        if prefix:
            if not prefix.endswith("/"):
                raise ValueError("prefix must be empty or end with '/'")
            check_key(prefix.rstrip("/"))
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix

        def _list() -> list[str]:
            names: set[str] = set()
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(full) :].rstrip("/"))
                for item in page.get("Contents", []):
                    names.add(item["Key"][len(full) :])
            return sorted(name for name in names if name)

        try:
            return await asyncio.to_thread(_list)
        except Exception as exc:
            raise ObjectStoreError(f"s3://{self.bucket}: {exc}") from exc


@lru_cache(maxsize=8)
def store_for_url(url: str) -> S3BlobStore:
    """One store (and boto3 client, which is costly to build and thread-safe) per URL."""
    return S3BlobStore.from_url(url)


def _default_client() -> Any:
    import boto3
    from botocore.config import Config

    # boto3 reads AWS_ENDPOINT_URL(_S3), AWS_REGION/AWS_DEFAULT_REGION and the credential chain.
    return boto3.session.Session().client(
        "s3", config=Config(retries={"mode": "standard", "max_attempts": 5})
    )

"""S3BlobStore against a real S3 server on loopback (moto in server mode): the same contract
as the local store, and HR backups shared by replicas through it."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from fastapi import FastAPI

from atrium.platform.apikeys import KeyStore
from atrium.platform.s3 import ObjectStoreError, S3BlobStore, parse_s3_url
from atrium.platform.storage import BlobNotFound
from atrium.settings import Settings
from tests.support import free_port, run_server, settings_env

MIB = 1024 * 1024


def _client(endpoint: str) -> object:
    # No retries: a test of failures must not wait for backoff.
    return boto3.session.Session().client(
        "s3",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="atrium-test",
        aws_secret_access_key="atrium-test",
    )


@pytest.fixture
def free_s3_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture
def bucket(moto_s3: str) -> str:
    """A fresh bucket on the moto server."""
    name = f"atrium-{os.urandom(4).hex()}"
    client: object = _client(moto_s3)
    client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


@pytest.fixture
def store(moto_s3: str, bucket: str) -> S3BlobStore:
    """A store under the prefix ``backups`` with the smallest part size S3 allows."""
    return S3BlobStore(bucket, "backups", client=_client(moto_s3), part_size=5 * MIB)


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("file:///tmp", "s3:///prefix", "s3://bucket/../x"):
        with pytest.raises(ValueError, match=r"s3://bucket/prefix|invalid blob key"):
            parse_s3_url(bad)


async def test_small_and_multipart_blobs_round_trip(store: S3BlobStore) -> None:
    await store.write_bytes("b1/manifest.json", b"{}")
    big = os.urandom(11 * MIB + 123)  # three parts: 5 + 5 + 1 MiB
    async with store.open_write("b1/jobs.avro") as out:
        for start in range(0, len(big), 3 * MIB):
            await out.write(big[start : start + 3 * MIB])
    assert await store.read_bytes("b1/manifest.json") == b"{}"
    assert b"".join([c async for c in store.open_read("b1/jobs.avro", chunk_size=MIB)]) == big
    assert await store.exists("b1/jobs.avro")
    assert not await store.exists("b1/nope.avro")
    with pytest.raises(BlobNotFound):
        await store.read_bytes("b1/nope.avro")


async def test_a_failed_write_leaves_nothing(store: S3BlobStore, moto_s3: str, bucket: str) -> None:
    async def half_written() -> None:
        async with store.open_write("b2/big.avro") as out:
            await out.write(os.urandom(6 * MIB))  # one part uploaded already
            raise RuntimeError("export failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        await half_written()
    assert not await store.exists("b2/big.avro")
    uploads = _client(moto_s3).list_multipart_uploads(Bucket=bucket)  # type: ignore[attr-defined]
    assert uploads.get("Uploads", []) == [], "the multipart upload was aborted"


async def test_list_prefixes_is_one_level(store: S3BlobStore) -> None:
    for key in ("b1/x.avro", "b1/y.avro", "b2/x.avro", "top.json"):
        await store.write_bytes(key, b"1")
    assert await store.list_prefixes() == ["b1", "b2", "top.json"]
    assert await store.list_prefixes("b1/") == ["x.avro", "y.avro"]
    assert await store.list_prefixes("b9/") == []


async def test_keys_cannot_escape_the_prefix(store: S3BlobStore) -> None:
    for bad in ("../x", "a//b", "/abs", "a/./b"):
        with pytest.raises(ValueError, match="invalid blob key"):
            await store.write_bytes(bad, b"1")


@pytest.mark.slow
async def test_backup_made_through_one_replica_is_restored_through_another(
    clean: FastAPI, settings: Settings, moto_s3: str, bucket: str, tmp_path: Path
) -> None:
    store: KeyStore = clean.state.api_keys
    key, _ = await store.create("s3-backups", ("hr:read", "hr:write"), rate_limit=100_000)
    env = settings_env(
        settings,
        ATRIUM_BACKUP_URL=f"s3://{bucket}/atrium/backups",
        AWS_ENDPOINT_URL=moto_s3,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="atrium-test",
        AWS_SECRET_ACCESS_KEY="atrium-test",
    )
    with (
        run_server(env | {"ATRIUM_REPLICA_NAME": "a"}, tmp_path / "a") as a,
        run_server(env | {"ATRIUM_REPLICA_NAME": "b"}, tmp_path / "b") as b,
    ):
        async with httpx.AsyncClient(headers={"X-API-KEY": key}, timeout=60) as http:
            rows = [{"id": i, "department": f"Dept {i}"} for i in range(1, 6)]
            stored = await http.post(f"{a.url}/hr/departments/batch", json=rows)
            assert stored.json()["inserted"] == 5, stored.text
            made = await http.post(f"{a.url}/hr/backups")
            assert made.status_code == 201, made.text
            assert made.headers["x-atrium-replica"] == "a"
            backup_id = made.json()["id"]

            listed = (await http.get(f"{b.url}/hr/backups")).json()
            assert [item["id"] for item in listed["items"]] == [backup_id]

            more = [{"id": 6, "department": "Dept 6"}]
            assert (await http.post(f"{b.url}/hr/departments/batch", json=more)).json()[
                "inserted"
            ] == 1
            restored = await http.post(f"{b.url}/hr/backups/{backup_id}/restore")
            assert restored.status_code == 200, restored.text
            assert restored.headers["x-atrium-replica"] == "b"
            page = (await http.get(f"{a.url}/hr/departments")).json()
            assert [row["id"] for row in page["items"]] == [1, 2, 3, 4, 5]

    # The objects really are in the bucket, under the configured prefix; no replica's disk
    # holds a backup.
    objects = _client(moto_s3).list_objects_v2(  # type: ignore[attr-defined]
        Bucket=bucket, Prefix=f"atrium/backups/{backup_id}/"
    )
    assert "departments.avro" in {o["Key"].rsplit("/", 1)[1] for o in objects["Contents"]}
    assert not settings.resolved_backup_dir.exists() or not any(
        settings.resolved_backup_dir.iterdir()
    )


async def test_an_unreachable_store_is_a_503_problem(free_s3_port: int) -> None:
    store = S3BlobStore("atrium-nowhere", "p", client=_client(f"http://127.0.0.1:{free_s3_port}"))
    with pytest.raises(ObjectStoreError) as caught:
        await store.list_prefixes()
    assert isinstance(caught.value, OSError)
    assert caught.value.status == 503

"""LocalBlobStore: the contract every BlobStore keeps (safe keys, all-or-nothing blobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from atrium.platform.storage import BlobNotFound, BlobStore, LocalBlobStore, check_key


def test_is_a_blob_store(tmp_path: Path) -> None:
    assert isinstance(LocalBlobStore(tmp_path), BlobStore)


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a b", "é", "a/", "x" * 201]
)
def test_unsafe_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        check_key(key)


async def test_write_read_list(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "root")
    assert await store.list_prefixes() == []
    async with store.open_write("b1/data.avro") as out:
        await out.write(b"abc")
        await out.write(b"def")
    await store.write_bytes("b1/manifest.json", b"{}")
    await store.write_bytes("b2/manifest.json", b"{}")
    assert await store.read_bytes("b1/data.avro") == b"abcdef"
    assert b"".join([c async for c in store.open_read("b1/data.avro", chunk_size=2)]) == b"abcdef"
    assert await store.exists("b1/manifest.json")
    assert not await store.exists("b3/manifest.json")
    assert await store.list_prefixes() == ["b1", "b2"]
    assert await store.list_prefixes("b1/") == ["data.avro", "manifest.json"]
    with pytest.raises(BlobNotFound):
        await store.read_bytes("nope")
    with pytest.raises(BlobNotFound):
        [c async for c in store.open_read("nope")]


async def _crash_while_writing(store: LocalBlobStore, key: str, data: bytes) -> None:
    async with store.open_write(key) as out:
        await out.write(data)
        raise RuntimeError("crash")


async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.write_bytes("b/x", b"old")
    with pytest.raises(RuntimeError):
        await _crash_while_writing(store, "b/x", b"half of the new")
    assert await store.read_bytes("b/x") == b"old"
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x"]  # no temporary left
    with pytest.raises(RuntimeError):
        await _crash_while_writing(store, "b/y", b"partial")
    assert not await store.exists("b/y")

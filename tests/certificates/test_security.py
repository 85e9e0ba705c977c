"""Encryption at rest, key handling and rotation, bearer tokens, refusal to start unkeyed."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from atrium.app import create_app
from atrium.certificates.crypto import (
    DecryptionError,
    Keyring,
    KeyringError,
    certificate_aad,
    new_key_entry,
)
from atrium.certificates.keys import (
    ENCRYPTION_KEY_FILE,
    TOKEN_SECRET_FILE,
    MissingSecretError,
    read_or_create_secret,
)
from atrium.certificates.runtime import load_secrets
from atrium.certificates.service import CertificatesContext, reencrypt_private_keys
from atrium.certificates.tokens import TokenSigner
from atrium.settings import Settings
from tests.certificates.conftest import UserFactory, add_certificate
from tests.support import settings_env

PLAINTEXT = (
    b"-----BEGIN PRIVATE KEY-----\nMARKER-7d1f0c2a-never-in-the-db\n-----END PRIVATE KEY-----"
)


# --- the key ring ------------------------------------------------------------------------------


def test_keyring_round_trip_and_binding() -> None:
    ring = Keyring.parse(new_key_entry("a"))
    stored = ring.encrypt(b"secret", certificate_aad(1, 7))
    assert stored.startswith("a:")
    assert b"secret" not in base64.b64decode(stored[2:])
    assert ring.decrypt(stored, certificate_aad(1, 7)) == b"secret"
    with pytest.raises(DecryptionError):
        ring.decrypt(stored, certificate_aad(2, 7))  # another certificate
    with pytest.raises(DecryptionError):
        ring.decrypt(stored, certificate_aad(1, 8))  # another owner
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, certificate_aad(1, 7))
    # Fresh nonce every time.
    assert ring.encrypt(b"secret", certificate_aad(1, 7)) != stored


def test_rotation_new_key_encrypts_old_keys_decrypt() -> None:
    old_entry, new_entry = new_key_entry("old"), new_key_entry("new")
    old = Keyring.parse(old_entry)
    stored = old.encrypt(b"k", b"aad")
    rotated = Keyring.parse(f"{new_entry}, {old_entry}")
    assert rotated.current == "new"
    assert rotated.key_ids == ["new", "old"]
    assert rotated.decrypt(stored, b"aad") == b"k"
    assert rotated.encrypt(b"k", b"aad").startswith("new:")
    with pytest.raises(DecryptionError, match="no key with id 'old'"):
        Keyring.parse(new_entry).decrypt(stored, b"aad")


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "nokid",
        "bad kid:" + base64.b64encode(os.urandom(32)).decode(),
        "k1:" + base64.b64encode(os.urandom(16)).decode(),
        "k1:not base64",
        "k1:{0},k1:{0}".format(base64.b64encode(os.urandom(32)).decode()),
    ],
)
def test_malformed_keyring_is_refused_without_echoing_keys(spec: str) -> None:
    with pytest.raises(KeyringError) as info:
        Keyring.parse(spec)
    secret_part = spec.partition(":")[2]
    assert not secret_part or secret_part[:20] not in str(info.value)


def test_url_safe_keys_are_accepted() -> None:
    raw = bytes([0xFB, 0xFF] * 16)
    ring = Keyring.parse("k:" + base64.urlsafe_b64encode(raw).decode())
    assert ring.decrypt(ring.encrypt(b"x", b""), b"") == b"x"


# --- generated secrets and the refusal to start -------------------------------------------------


def test_embedded_default_generates_private_key_files(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    first = load_secrets(settings)
    for name in (ENCRYPTION_KEY_FILE, TOKEN_SECRET_FILE):
        path = tmp_path / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_secrets(settings)
    stored = first.keyring.encrypt(b"x", b"")
    assert second.keyring.decrypt(stored, b"") == b"x"
    token = first.tokens.issue(1, 0)
    assert second.tokens.verify(token).user_id == 1


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    results: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(
            read_or_create_secret(path, lambda: base64.b64encode(os.urandom(8)).decode())
        )

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]


def test_configured_keys_win_over_files(tmp_path: Path) -> None:
    entry = new_key_entry("configured")
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, encryption_key=entry, token_secret="x" * 32
    )
    assert load_secrets(settings).keyring.current == "configured"
    assert not (tmp_path / ENCRYPTION_KEY_FILE).exists()


@pytest.mark.parametrize("missing", ["encryption_key", "token_secret"])
def test_postgresql_without_keys_refuses_to_start(tmp_path: Path, missing: str) -> None:
    values = {"encryption_key": new_key_entry("k1"), "token_secret": "s" * 32}
    values.pop(missing)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        database_url="postgresql://atrium@127.0.0.1:5432/atrium",
        **values,
    )
    with pytest.raises(MissingSecretError, match=f"ATRIUM_{missing.upper()}"):
        create_app(settings)
    assert list(tmp_path.iterdir()) == []  # and nothing was generated


async def test_webhook_without_secret_delivers_nothing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    configured = settings.model_copy(update={"cert_webhook_url": "http://127.0.0.1:9/hook"})
    app = create_app(configured)
    with caplog.at_level(logging.ERROR, logger="atrium.certificates"):
        async with app.router.lifespan_context(app):
            assert app.state.certificates_worker is None
    assert "ATRIUM_CERT_WEBHOOK_SECRET is not" in caplog.text


def test_server_process_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    env.update(
        ATRIUM_DATA_DIR=str(tmp_path),
        ATRIUM_DATABASE_URL="postgresql://atrium@127.0.0.1:1/atrium",
        ATRIUM_PORT="1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "atrium.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "ATRIUM_ENCRYPTION_KEY is required with PostgreSQL" in result.stdout + result.stderr


# --- tokens ------------------------------------------------------------------------------------


async def test_expired_token_is_401(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    user = await make_user()
    signer: TokenSigner = app.state.certificates.tokens
    old = signer.issue(user.id, 0, now=1_000_000)
    response = await client.get(f"/users/{user.id}", headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# --- at rest -------------------------------------------------------------------------------------


async def test_database_never_holds_the_plaintext(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory, backend: str
) -> None:
    user = await make_user()
    cid = await add_certificate(client, user, private_key=PLAINTEXT)
    async with app.state.engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT private_key_encrypted FROM certificates WHERE id = :id"), {"id": cid}
            )
        ).scalar_one()
    ring: Keyring = app.state.certificates.keyring
    assert stored.startswith(f"{ring.current}:")
    assert b"MARKER" not in stored.encode()
    assert base64.b64encode(PLAINTEXT).decode() not in stored
    assert b"MARKER" not in base64.b64decode(stored.partition(":")[2])
    if backend == "sqlite":
        # Not in any page of the database file or its write-ahead log either.
        async with app.state.engine.connect() as connection:
            await connection.execute(text("PRAGMA wal_checkpoint(FULL)"))
        # Read by another process: closing a descriptor of the database file in this process
        # would drop SQLite's POSIX locks on it.
        files = [str(p) for p in app.state.settings.data_dir.glob("atrium.db*")]
        script = (
            "import sys\n"
            "hits = [p for p in sys.argv[1:] if b'MARKER-7d1f0c2a' in open(p, 'rb').read()]\n"
            "print(','.join(hits))"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, *files, stdout=subprocess.PIPE
        )
        out, _ = await process.communicate()
        assert process.returncode == 0
        assert len(files) >= 2
        assert out.strip() == b""
    fetched = await client.get(
        f"/users/{user.id}/certificates/{cid}/private-key", headers=user.headers
    )
    assert base64.b64decode(fetched.json()["private_key"]) == PLAINTEXT


async def test_ciphertext_moved_to_another_row_does_not_decrypt(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    user = await make_user()
    first = await add_certificate(client, user, private_key=b"first key")
    second = await add_certificate(client, user, private_key=b"second key")
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE certificates SET private_key_encrypted = "
                "(SELECT private_key_encrypted FROM certificates WHERE id = :src) WHERE id = :dst"
            ),
            {"src": first, "dst": second},
        )
    moved = await client.get(
        f"/users/{user.id}/certificates/{second}/private-key", headers=user.headers
    )
    assert moved.status_code == 500
    assert moved.json()["type"] == "https://atrium.dev/problems/private-key-unavailable"
    assert "first key" not in moved.text
    intact = await client.get(
        f"/users/{user.id}/certificates/{first}/private-key", headers=user.headers
    )
    assert base64.b64decode(intact.json()["private_key"]) == b"first key"


async def test_reencrypt_is_batched_and_resumable(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    user = await make_user()
    keys = {
        await add_certificate(client, user, private_key=f"key {i}".encode()): i for i in range(5)
    }
    ctx: CertificatesContext = app.state.certificates
    old_ring = ctx.keyring
    old_spec = _spec_of(app)
    rotated = Keyring.parse(f"{new_key_entry('rotated')},{old_spec}")

    class Interrupted(Exception):
        pass

    def stop_after_first(stats: object) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        await reencrypt_private_keys(
            ctx.sessionmaker, rotated, batch_size=2, on_batch=stop_after_first
        )
    assert await _key_ids(app) == {"rotated": 2, old_ring.current: 3}

    batches: list[int] = []
    stats = await reencrypt_private_keys(
        ctx.sessionmaker, rotated, batch_size=2, on_batch=lambda s: batches.append(s.reencrypted)
    )
    assert stats.reencrypted == 3
    assert batches == [2, 3]
    assert await _key_ids(app) == {"rotated": 5}
    ctx.keyring = rotated
    try:
        for cid, i in keys.items():
            response = await client.get(
                f"/users/{user.id}/certificates/{cid}/private-key", headers=user.headers
            )
            assert base64.b64decode(response.json()["private_key"]) == f"key {i}".encode()
        assert (await reencrypt_private_keys(ctx.sessionmaker, rotated)).reencrypted == 0
    finally:
        ctx.keyring = old_ring


async def test_reencrypt_command_line(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory, settings: Settings
) -> None:
    user = await make_user()
    cid = await add_certificate(client, user, private_key=b"cli key")
    spec = f"{new_key_entry('cli')},{_spec_of(app)}"
    env = settings_env(settings, ATRIUM_ENCRYPTION_KEY=spec)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atrium.cli",
        "certificates",
        "reencrypt",
        "--batch-size",
        "1",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert b"1 private keys re-encrypted" in err
    assert out == b""
    assert await _key_ids(app) == {"cli": 1}
    ring = Keyring.parse(spec)
    async with app.state.engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT private_key_encrypted FROM certificates WHERE id = :id"), {"id": cid}
            )
        ).scalar_one()
    assert ring.decrypt(stored, certificate_aad(cid, user.id)) == b"cli key"


def test_generate_key_prints_one_entry() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "atrium.cli", "certificates", "generate-key", "--kid", "k2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    line = result.stdout.strip()
    assert line.startswith("k2:")
    assert Keyring.parse(line).current == "k2"


def test_rotate_key_prepends_to_the_generated_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    env["ATRIUM_DATA_DIR"] = str(tmp_path)
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    before = load_secrets(settings).keyring
    subprocess.run(
        [sys.executable, "-m", "atrium.cli", "certificates", "rotate-key", "--kid", "next"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    after = load_secrets(settings).keyring
    assert after.key_ids == ["next", *before.key_ids]
    assert stat.S_IMODE((tmp_path / ENCRYPTION_KEY_FILE).stat().st_mode) == 0o600


def _spec_of(app: FastAPI) -> str:
    settings: Settings = app.state.settings
    if settings.encryption_key is not None:
        return settings.encryption_key.get_secret_value()
    return (settings.data_dir / ENCRYPTION_KEY_FILE).read_text().strip()


async def _key_ids(app: FastAPI) -> dict[str, int]:
    async with app.state.engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT private_key_encrypted FROM certificates"))
        ).all()
    counts: dict[str, int] = {}
    for (stored,) in rows:
        kid = Keyring.key_id_of(stored)
        counts[kid] = counts.get(kid, 0) + 1
    return counts

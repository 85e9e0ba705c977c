"""The services without HTTP: rules, after-commit cache invalidation, login, private keys."""

from __future__ import annotations

import base64

import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from atrium.certificates import service
from atrium.certificates.schemas import CertificateCreate, UserCreate, UserUpdate
from atrium.certificates.service import CertificatesContext, EmailTaken
from atrium.platform.db import commit, rollback
from atrium.platform.errors import NotFound, Unauthorized


def _user(email: str = "ada@example.com") -> UserCreate:
    return UserCreate(name="Ada", email=email, password=SecretStr("long-password"))


async def test_cache_is_invalidated_only_after_commit(clean: FastAPI) -> None:
    ctx: CertificatesContext = clean.state.certificates
    async with clean.state.sessionmaker() as session:
        user = await service.create_user(session, ctx, _user())
        await commit(session)
        user_id = user.id
    assert (await service.get_user(ctx, user_id))["name"] == "Ada"  # now cached

    async with clean.state.sessionmaker() as session:
        await service.update_user(session, ctx, user_id, UserUpdate(name="Ada King"))
        await session.flush()
        assert (await service.get_user(ctx, user_id))["name"] == "Ada"  # not committed yet
        await rollback(session)
    assert (await service.get_user(ctx, user_id))["name"] == "Ada"

    async with clean.state.sessionmaker() as session:
        await service.update_user(session, ctx, user_id, UserUpdate(name="Ada King"))
        await commit(session)
    assert (await service.get_user(ctx, user_id))["name"] == "Ada King"


async def test_duplicate_email_and_missing_user(clean: FastAPI) -> None:
    ctx: CertificatesContext = clean.state.certificates
    async with clean.state.sessionmaker() as session:
        await service.create_user(session, ctx, _user())
        await commit(session)
        with pytest.raises(EmailTaken):
            await service.create_user(session, ctx, _user("ADA@example.com"))
        await rollback(session)
        with pytest.raises(NotFound):
            await service.update_user(session, ctx, 10**12, UserUpdate(name="x"))
        with pytest.raises(NotFound):
            await service.delete_user(session, ctx, 10**12)
    with pytest.raises(NotFound):
        await service.get_user(ctx, 10**12)


async def test_login_and_token_revocation(clean: FastAPI) -> None:
    ctx: CertificatesContext = clean.state.certificates
    async with clean.state.sessionmaker() as session:
        user = await service.create_user(session, ctx, _user())
        await commit(session)
        user_id = user.id
        token = await service.login(session, ctx, "Ada@Example.com", "long-password")
        with pytest.raises(Unauthorized):
            await service.login(session, ctx, "ada@example.com", "wrong-password")
        with pytest.raises(Unauthorized):
            await service.login(session, ctx, "nobody@example.com", "long-password")
    assert (await service.user_from_token(ctx, token))["id"] == user_id
    async with clean.state.sessionmaker() as session:
        await service.update_user(
            session, ctx, user_id, UserUpdate(password=SecretStr("another-password"))
        )
        await commit(session)
    with pytest.raises(Unauthorized):
        await service.user_from_token(ctx, token)


async def test_certificates_lifecycle(clean: FastAPI) -> None:
    ctx: CertificatesContext = clean.state.certificates
    async with clean.state.sessionmaker() as session:
        user = await service.create_user(session, ctx, _user())
        await commit(session)
        user_id = user.id
        ids = []
        for i in range(3):
            created = await service.create_certificate(
                session,
                ctx,
                user_id,
                CertificateCreate(
                    private_key=base64.b64encode(f"key {i}".encode()).decode(),
                    body=f"body {i}",
                    active=i != 1,
                ),
            )
            ids.append(created.id)
        await commit(session)
        with pytest.raises(NotFound):
            await service.create_certificate(
                session, ctx, 10**12, CertificateCreate(private_key="a2V5", body="b")
            )
        await rollback(session)

    page = await service.list_certificates(ctx, user_id, True, 50, 0)
    assert [item["id"] for item in page["items"]] == [ids[0], ids[2]]
    assert page["total"] == 2
    assert (await service.list_certificates(ctx, user_id, None, 1, 1))["items"][0]["id"] == ids[1]

    async with clean.state.sessionmaker() as session:
        key = await service.get_private_key(session, ctx, user_id, ids[2])
        assert base64.b64decode(key) == b"key 2"
        changed = await service.set_active(session, ctx, user_id, ids[0], False)
        assert changed["active"] is False
        await service.delete_certificate(session, ctx, user_id, ids[2])
        await commit(session)
    assert (await service.list_certificates(ctx, user_id, True, 50, 0))["total"] == 0
    with pytest.raises(NotFound):
        await service.get_certificate(ctx, user_id, ids[2])

    async with clean.state.sessionmaker() as session:
        await service.delete_user(session, ctx, user_id)
        await commit(session)
    assert (await service.list_certificates(ctx, user_id, None, 50, 0))["total"] == 0
    with pytest.raises(NotFound):
        await service.get_certificate(ctx, user_id, ids[0])

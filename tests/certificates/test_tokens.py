"""Bearer tokens through PyJWT: only genuine, current HS256 tokens with every claim get in.

Each forged or broken token is sent to ``GET /users/{id}`` (the endpoint the token guards) and
must get a 401 problem document with the Bearer challenge; the same request with a genuine
token gets 200, so every refusal below is about the token and nothing else.
"""

from __future__ import annotations

import base64
import time
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from atrium.certificates.keys import MissingSecretError, load_token_secret
from atrium.certificates.tokens import InvalidTokenError, TokenSigner
from atrium.settings import Settings
from tests.certificates.conftest import TestUser, UserFactory

PROBLEM = "application/problem+json"
SECRET = b"unit-test-secret-" + b"x" * 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user_id: int, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user_id), "iat": now, "exp": now + 600, "ver": 0}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], key: Any, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 43-byte key is short for HS512: forged anyway
        return jwt.encode(claims, key, algorithm=algorithm)


def _unsigned(claims: dict[str, Any]) -> str:
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    return f"{header}.{_b64(orjson.dumps(claims))}."


def _tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{_b64(orjson.dumps(claims))}.{signature}"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


FORGERIES: dict[str, Callable[[int, bytes], str]] = {
    "alg none": lambda uid, _: _unsigned(_claims(uid)),
    "alg none, signature kept": lambda uid, key: (
        _unsigned(_claims(uid)) + _sign(_claims(uid), key).split(".")[2]
    ),
    "alg HS512 with our secret": lambda uid, key: _sign(_claims(uid), key, "HS512"),
    "alg HS384 with our secret": lambda uid, key: _sign(_claims(uid), key, "HS384"),
    "alg RS256": lambda uid, _: _sign(_claims(uid), _rsa_key(), "RS256"),
    "another secret": lambda uid, _: _sign(_claims(uid), b"another-secret-" + b"y" * 32),
    "expired": lambda uid, key: _sign(
        _claims(uid, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600), key
    ),
    "nbf in the future": lambda uid, key: _sign(_claims(uid, nbf=int(time.time()) + 3600), key),
    "iat in the future": lambda uid, key: _sign(
        _claims(uid, iat=int(time.time()) + 3600, exp=int(time.time()) + 7200), key
    ),
    "tampered ver": lambda uid, key: _tampered(_sign(_claims(uid), key), ver=1),
    "tampered exp": lambda uid, key: _tampered(
        _sign(_claims(uid, exp=int(time.time()) - 60), key), exp=int(time.time()) + 3600
    ),
    "no sub": lambda uid, key: _sign(_claims(uid, sub=None), key),
    "no iat": lambda uid, key: _sign(_claims(uid, iat=None), key),
    "no exp": lambda uid, key: _sign(_claims(uid, exp=None), key),
    "no ver": lambda uid, key: _sign(_claims(uid, ver=None), key),
    "ver not an integer": lambda uid, key: _sign(_claims(uid, ver="0"), key),
    "sub not a user id": lambda uid, key: _sign(_claims(uid, sub="admin"), key),
    "not a JWT": lambda uid, key: "a.b.c",
    "two segments": lambda uid, key: ".".join(_sign(_claims(uid), key).split(".")[:2]),
    "too long": lambda uid, key: _sign(_claims(uid, pad="x" * 5000), key),
}


async def test_forged_or_broken_tokens_are_401(
    client: httpx.AsyncClient, app: FastAPI, make_user: UserFactory
) -> None:
    user: TestUser = await make_user()
    key = load_token_secret(app.state.settings)
    url = f"/users/{user.id}"
    genuine = _sign(_claims(user.id), key)
    ok = await client.get(url, headers={"Authorization": f"Bearer {genuine}"})
    assert ok.status_code == 200, ok.text  # the same request with a genuine token gets in
    let_through = {}
    for forgery, make in FORGERIES.items():
        response = await client.get(url, headers={"Authorization": f"Bearer {make(user.id, key)}"})
        problem = response.headers.get("content-type") == PROBLEM and response.json()
        if (
            response.status_code != 401
            or not problem
            or not problem["type"].endswith("/unauthorized")
            or response.headers.get("www-authenticate") != 'Bearer error="invalid_token"'
        ):
            let_through[forgery] = (response.status_code, response.text[:200])
    assert let_through == {}


async def test_tampered_sub_cannot_reach_another_user(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    victim, attacker = await make_user(), await make_user()
    token = attacker.headers["Authorization"].removeprefix("Bearer ")
    forged = _tampered(token, sub=str(victim.id))
    response = await client.get(
        f"/users/{victim.id}", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401


async def test_a_changed_password_revokes_earlier_tokens(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    url = f"/users/{user.id}"
    assert (await client.get(url, headers=user.headers)).status_code == 200
    changed = await client.patch(
        url, json={"password": "another-long-password"}, headers=user.headers
    )
    assert changed.status_code == 200, changed.text
    # The token was verified (and remembered) before: its ver is still compared every time.
    response = await client.get(url, headers=user.headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_issued_tokens_carry_the_claims_and_verify() -> None:
    signer = TokenSigner(SECRET, ttl_seconds=600)
    before = int(time.time())
    token = signer.issue(42, 3)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert set(payload) == {"sub", "iat", "exp", "ver"}
    assert payload["sub"] == "42"
    assert payload["ver"] == 3
    assert before <= payload["iat"] <= payload["exp"] - 600 <= int(time.time())
    claims = signer.verify(token)
    assert (claims.user_id, claims.version, claims.expires_at) == (42, 3, payload["exp"])


def test_a_remembered_token_still_expires() -> None:
    now = [time.time()]
    signer = TokenSigner(SECRET, ttl_seconds=600, clock=lambda: now[0])
    token = signer.issue(7, 0)
    assert signer.verify(token).user_id == 7  # checked by PyJWT, then remembered
    now[0] += 600  # expired, but within the leeway
    assert signer.verify(token).user_id == 7
    now[0] += 5
    with pytest.raises(InvalidTokenError, match="expired"):
        signer.verify(token)  # from the table: only the expiry is checked, and it is


def test_the_table_of_verified_tokens_is_bounded() -> None:
    signer = TokenSigner(SECRET, ttl_seconds=600, cache_size=3)
    tokens = [signer.issue(uid, 0) for uid in range(10)]
    for token in tokens:
        signer.verify(token)
    assert len(signer._verified) == 3
    assert [signer.verify(t).user_id for t in tokens] == list(range(10))


def test_short_secrets_are_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenSigner(b"x" * 31, ttl_seconds=600)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, token_secret="s" * 31
    )
    with pytest.raises(MissingSecretError, match="at least 32 characters"):
        load_token_secret(settings)
    assert load_token_secret(settings.model_copy(update={"token_secret": None})) != b""

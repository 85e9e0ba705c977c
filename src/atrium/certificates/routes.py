"""HTTP endpoints of the certificates domain (thin: parse, call the service, shape the response)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Query, Response

from atrium.certificates import service
from atrium.certificates.auth import ContextDep, Principal, PrincipalDep
from atrium.certificates.schemas import (
    MAX_ID,
    NO_NUL,
    ActiveFilter,
    ActiveUpdate,
    CertificateCreate,
    CertificateCreated,
    CertificateOut,
    CertificatePage,
    PrivateKeyOut,
    Token,
    UserCreate,
    UserCreated,
    UserOut,
    UserUpdate,
)
from atrium.certificates.service import CertificatesContext
from atrium.platform.db import SessionDep
from atrium.platform.errors import problem_responses
from atrium.platform.negotiation import AcceptJson, JsonOnly

UserId = Annotated[int, Path(ge=1, le=MAX_ID, description="The user's id.")]
CertificateId = Annotated[int, Path(ge=1, le=MAX_ID, description="The certificate's id.")]
NO_STORE = {"Cache-Control": "no-store"}


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    responses = problem_responses(*statuses)
    if 401 in responses:
        responses[401]["description"] = "Missing, invalid or expired credentials"
        responses[401]["headers"] = {
            "WWW-Authenticate": {
                "description": "`Bearer` challenge (RFC 6750)",
                "schema": {"type": "string"},
            }
        }
    return responses


router = APIRouter(tags=["certificates"])
users = APIRouter(dependencies=[JsonOnly])
auth = APIRouter(dependencies=[AcceptJson])


async def _authorize(principal: Principal, ctx: CertificatesContext, user_id: int) -> None:
    principal.ensure_owner_or_admin(user_id)
    if principal.user is None or principal.user["id"] != user_id:
        await service.get_user(ctx, user_id)  # an admin naming a user that does not exist: 404


# --- users and login -------------------------------------------------------------------------


@users.post(
    "/users",
    status_code=201,
    summary="Register a user",
    responses=_responses(406, 409, 415),
)
async def create_user(
    data: UserCreate, response: Response, session: SessionDep, ctx: ContextDep
) -> UserCreated:
    """Register a user (public); the password is stored only as an Argon2id hash."""
    user = await service.create_user(session, ctx, data)
    response.headers["Location"] = f"/users/{user.id}"
    return UserCreated(id=user.id)


@auth.post(
    "/auth/token",
    summary="Log in (OAuth2 password flow)",
    responses=_responses(401, 406),
)
async def issue_token(
    username: Annotated[
        str,
        Form(min_length=1, max_length=320, pattern=NO_NUL, description="The user's email."),
    ],
    password: Annotated[
        str,
        Form(
            min_length=1, max_length=1024, pattern=NO_NUL, json_schema_extra={"format": "password"}
        ),
    ],
    response: Response,
    session: SessionDep,
    ctx: ContextDep,
    grant_type: Annotated[Literal["password"], Form()] = "password",
    scope: Annotated[str, Form(max_length=1000, pattern=NO_NUL)] = "",
) -> Token:
    """Exchange email (as `username`) and password for a bearer token."""
    token = await service.login(session, ctx, username, password)
    response.headers.update({**NO_STORE, "Pragma": "no-cache"})  # RFC 6749 §5.1
    return Token(access_token=token, expires_in=ctx.tokens.ttl_seconds)


@users.get(
    "/users/{user_id}",
    summary="Get a user",
    responses=_responses(401, 404, 406),
)
async def get_user(user_id: UserId, principal: PrincipalDep, ctx: ContextDep) -> UserOut:
    """A user's name and email (the user themself or an admin)."""
    principal.ensure_owner_or_admin(user_id)
    user = await service.get_user(ctx, user_id)
    return UserOut(id=user["id"], name=user["name"], email=user["email"])


@users.patch(
    "/users/{user_id}",
    summary="Update a user",
    responses=_responses(401, 404, 406, 409, 415),
)
async def update_user(
    user_id: UserId, data: UserUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> UserOut:
    """Change name, email or password; a new password revokes every token issued before."""
    principal.ensure_owner_or_admin(user_id)
    user = await service.update_user(session, ctx, user_id, data)
    return UserOut(id=user["id"], name=user["name"], email=user["email"])


@users.delete(
    "/users/{user_id}",
    status_code=204,
    summary="Delete a user",
    response_class=Response,
    responses=_responses(401, 404, 406),
)
async def delete_user(
    user_id: UserId, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> Response:
    """Delete the user and all of their certificates."""
    principal.ensure_owner_or_admin(user_id)
    await service.delete_user(session, ctx, user_id)
    return Response(status_code=204)


# --- certificates ----------------------------------------------------------------------------


@users.post(
    "/users/{user_id}/certificates",
    status_code=201,
    summary="Add a certificate",
    responses=_responses(401, 404, 406, 415),
)
async def create_certificate(
    user_id: UserId,
    data: CertificateCreate,
    response: Response,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
) -> CertificateCreated:
    """Store a certificate; the private key is encrypted at rest (AES-256-GCM)."""
    await _authorize(principal, ctx, user_id)
    certificate = await service.create_certificate(session, ctx, user_id, data)
    response.headers["Location"] = f"/users/{user_id}/certificates/{certificate.id}"
    return CertificateCreated(id=certificate.id, user_id=user_id)


@users.get(
    "/users/{user_id}/certificates",
    summary="List a user's certificates",
    responses=_responses(401, 404, 406),
)
async def list_certificates(
    user_id: UserId,
    principal: PrincipalDep,
    ctx: ContextDep,
    active: Annotated[
        ActiveFilter | None,
        Query(description="`true`: only active ones, `false`: only inactive ones; omit for all."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="Items to skip.")] = 0,
) -> CertificatePage:
    """A page of the user's certificates (no private keys), oldest first."""
    await _authorize(principal, ctx, user_id)
    flag = None if active is None else active == "true"
    page = await service.list_certificates(ctx, user_id, flag, limit, offset)
    return CertificatePage.model_validate(page)


@users.get(
    "/users/{user_id}/certificates/{certificate_id}",
    summary="Get a certificate",
    responses=_responses(401, 404, 406),
)
async def get_certificate(
    user_id: UserId, certificate_id: CertificateId, principal: PrincipalDep, ctx: ContextDep
) -> CertificateOut:
    """One certificate (without its private key)."""
    await _authorize(principal, ctx, user_id)
    return CertificateOut(**await service.get_certificate(ctx, user_id, certificate_id))


@users.get(
    "/users/{user_id}/certificates/{certificate_id}/private-key",
    summary="Get a certificate's private key",
    responses=_responses(401, 403, 404, 406),
)
async def get_private_key(
    user_id: UserId,
    certificate_id: CertificateId,
    response: Response,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
) -> PrivateKeyOut:
    """The decrypted private key, base64 encoded; for the certificate's owner only."""
    principal.ensure_owner(user_id)
    key = await service.get_private_key(session, ctx, user_id, certificate_id)
    response.headers.update(NO_STORE)
    return PrivateKeyOut(id=certificate_id, private_key=key)


@users.patch(
    "/users/{user_id}/certificates/{certificate_id}",
    summary="Activate or deactivate a certificate",
    responses=_responses(401, 404, 406, 415),
)
@users.patch(
    "/users/{user_id}/certificates/{certificate_id}/active",
    summary="Activate or deactivate a certificate (the path existing clients use)",
    responses=_responses(401, 404, 406, 415),
)
async def update_certificate(
    user_id: UserId,
    certificate_id: CertificateId,
    data: ActiveUpdate,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
) -> CertificateOut:
    """Set `active`; a change is announced to the certificate webhook."""
    await _authorize(principal, ctx, user_id)
    changed = await service.set_active(session, ctx, user_id, certificate_id, data.active)
    return CertificateOut(**changed)


@users.delete(
    "/users/{user_id}/certificates/{certificate_id}",
    status_code=204,
    summary="Delete a certificate",
    response_class=Response,
    responses=_responses(401, 404, 406),
)
async def delete_certificate(
    user_id: UserId,
    certificate_id: CertificateId,
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
) -> Response:
    """Delete one certificate."""
    await _authorize(principal, ctx, user_id)
    await service.delete_certificate(session, ctx, user_id, certificate_id)
    return Response(status_code=204)


router.include_router(auth)
router.include_router(users)

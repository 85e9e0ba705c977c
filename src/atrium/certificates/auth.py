"""Who is calling: a user with a bearer token, and/or an administrator.

Users authenticate with ``Authorization: Bearer <token>`` from ``POST /auth/token``. An
administrator may act on any user: a platform API key with the ``admin`` scope (``atrium apikeys
create --scopes admin``), or the static ``ATRIUM_ADMIN_API_KEY`` kept for deployments that
configured one before API keys existed. That decision lives in :func:`is_admin`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from atrium.certificates import service
from atrium.certificates.service import BEARER_CHALLENGE, CertificatesContext, UserView
from atrium.platform.apikeys import API_KEY_SCHEME, principal_of
from atrium.platform.errors import Forbidden, NotFound, Unauthorized

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token",
    scheme_name="OAuth2PasswordBearer",
    description="A bearer token from `POST /auth/token` (email as `username`).",
    auto_error=False,
)
# The platform's X-API-KEY scheme: one header, one scheme in OpenAPI.
admin_key_scheme = API_KEY_SCHEME


async def get_context(request: Request) -> CertificatesContext:
    """The domain's services context, built in the application's lifespan."""
    # async, though it awaits nothing: FastAPI runs a plain ``def`` dependency in its thread
    # pool, a hand-off to another thread (and back) on every request.
    ctx: CertificatesContext = request.app.state.certificates
    return ctx


ContextDep = Annotated[CertificatesContext, Depends(get_context)]


def is_admin(request: Request, api_key: str | None) -> bool:
    """Whether the request carries an administrator credential.

    A platform key whose scopes include ``admin`` (resolved by the guard middleware), or
    ``X-API-KEY`` equal to ``ATRIUM_ADMIN_API_KEY`` (constant-time). Any other key is not an
    error here, just not an administrator.
    """
    principal = principal_of(request)
    if principal is not None and not principal.anonymous and "admin" in principal.scopes:
        return True
    configured = request.app.state.settings.admin_api_key
    if api_key is None or configured is None:
        return False
    return hmac.compare_digest(api_key.encode(), configured.get_secret_value().encode())


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user: UserView | None
    admin: bool

    def ensure_owner_or_admin(self, user_id: int) -> None:
        """404 (not 403, so ids do not leak) unless the caller is ``user_id`` or an admin."""
        if self.admin or (self.user is not None and self.user["id"] == user_id):
            return
        raise NotFound(f"user {user_id} does not exist")

    def ensure_owner(self, user_id: int) -> None:
        """Only the user themself (private keys are not disclosed to administrators)."""
        if self.user is not None and self.user["id"] == user_id:
            return
        if self.admin:
            raise Forbidden("private keys are disclosed to their owner only")
        raise NotFound(f"user {user_id} does not exist")


async def get_principal(
    request: Request,
    ctx: ContextDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(admin_key_scheme)],
) -> Principal:
    """Authenticate the caller; 401 with a ``WWW-Authenticate: Bearer`` challenge if nobody."""
    admin = is_admin(request, api_key)
    user = await service.user_from_token(ctx, token) if token else None
    if user is None and not admin:
        raise Unauthorized("authentication required", headers=BEARER_CHALLENGE)
    return Principal(user=user, admin=admin)


PrincipalDep = Annotated[Principal, Depends(get_principal)]

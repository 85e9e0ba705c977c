"""Request and response bodies of the certificates domain."""

from __future__ import annotations

from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

# PostgreSQL cannot store NUL; refusing it here makes it a 422 instead of a driver error.
NO_NUL = r"^[^\x00]*$"
# RFC 4648 base64 with padding, canonical (unused trailing bits are zero), no whitespace.
BASE64 = (
    r"^(?:[A-Za-z0-9+/]{4})*"
    r"(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$"
)
MAX_ID = 2**63 - 1

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]


def _valid_email(value: str) -> str:
    try:
        # test_environment: also accept the reserved ``.test`` TLD (RFC 2606) that API testers
        # use; deliverability is not checked (no DNS look-ups on the request path).
        return validate_email(value, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from exc


Email = Annotated[
    str,
    Field(max_length=320, json_schema_extra={"format": "email"}),
    AfterValidator(_valid_email),
]


def _no_nul_secret(value: SecretStr) -> SecretStr:
    if "\x00" in value.get_secret_value():
        raise ValueError("must not contain NUL characters")
    return value


Password = Annotated[
    SecretStr,
    # SecretStr takes no ``pattern``: declared for clients, enforced by the validator.
    Field(min_length=8, max_length=1024, json_schema_extra={"pattern": NO_NUL}),
    AfterValidator(_no_nul_secret),
]
Body = Annotated[str, Field(min_length=1, max_length=65_536, pattern=NO_NUL)]
PrivateKey = Annotated[
    str,
    Field(
        min_length=4,
        max_length=87_384,  # 64 KiB of key material
        pattern=BASE64,
        description="The private key, base64 encoded (RFC 4648, padded). Stored encrypted.",
    ),
]
ActiveFilter = Literal["true", "false"]


class _Request(BaseModel):
    # Strict: ``"true"`` is not a boolean and ``"1"`` not an integer; unknown fields are errors.
    model_config = ConfigDict(strict=True, extra="forbid")


class UserCreate(_Request):
    """A registration."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "password": "analytical-engine",
                }
            ]
        }
    )

    name: Name
    email: Email
    password: Password = Field(
        description="At least 8 characters; stored only as an Argon2id hash."
    )


class UserUpdate(_Request):
    """Fields to change; omitted (or null) fields stay as they are."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Ada King"}, {"password": "difference-engine"}]}
    )

    name: Name | None = None
    email: Email | None = None
    password: Password | None = Field(
        default=None, description="A new password; every token issued before stops working."
    )


class UserCreated(BaseModel):
    """The new user's id."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"id": 1}]})

    id: int


class UserOut(BaseModel):
    """A user, as its owner sees it (never the password)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"}]
        }
    )

    id: int
    name: str
    email: str


class Token(BaseModel):
    """An OAuth2 bearer token."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2ln",
                    "token_type": "bearer",
                    "expires_in": 3600,
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the token expires.")


class CertificateCreate(_Request):
    """A new certificate."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "private_key": "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t",
                    "body": "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----",
                    "active": True,
                }
            ]
        }
    )

    private_key: PrivateKey
    body: Body
    active: bool = True


class ActiveUpdate(_Request):
    """Activate (``true``) or deactivate (``false``) a certificate."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"active": False}]})

    active: bool


class CertificateCreated(BaseModel):
    """The new certificate's id and owner."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"id": 10, "user_id": 1}]})

    id: int
    user_id: int


class CertificateItem(BaseModel):
    """A certificate in a list."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"id": 10, "active": True, "body": "-----BEGIN CERTIFICATE-----\n..."}]
        }
    )

    id: int
    active: bool
    body: str


class CertificateOut(BaseModel):
    """One certificate (its private key only via ``…/private-key``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 10,
                    "user_id": 1,
                    "active": True,
                    "body": "-----BEGIN CERTIFICATE-----\n...",
                }
            ]
        }
    )

    id: int
    user_id: int
    active: bool
    body: str


class CertificatePage(BaseModel):
    """One page of a user's certificates."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"id": 10, "active": True, "body": "-----BEGIN CERTIFICATE-----\n..."}
                    ],
                    "total": 1,
                    "limit": 50,
                    "offset": 0,
                }
            ]
        }
    )

    items: list[CertificateItem]
    total: int = Field(description="Certificates matching the filter, over all pages.")
    limit: int
    offset: int


class PrivateKeyOut(BaseModel):
    """A certificate's private key, decrypted for its owner."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": 10, "private_key": "LS0tLS1CRUdJTiBQUklWQVRF"}]}
    )

    id: int
    private_key: str = Field(description="Base64, exactly as it was uploaded.")

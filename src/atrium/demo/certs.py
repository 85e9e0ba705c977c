"""The demo user's certificates: self-signed Ed25519 certificates, the same on every run.

Generated rather than shipped, so the package holds no private-key files; Ed25519 signatures
are deterministic, so a fixed seed gives byte-identical certificates each time, which is what
lets a second ``atrium demo`` recognise them and change nothing. These keys are public
knowledge (the seed is in this file): they are sample data, never credentials.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2036, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class DemoCertificate:
    """What ``POST /users/{id}/certificates`` takes: the PEM body, the key, active or not."""

    common_name: str
    body: str
    private_key: str  # base64 of the PEM private key, as the API wants it
    active: bool


def make_certificate(common_name: str, *, active: bool) -> DemoCertificate:
    """A self-signed certificate for ``common_name``, identical on every call."""
    seed = hashlib.sha256(f"atrium demo certificate {common_name}".encode()).digest()
    key = Ed25519PrivateKey.from_private_bytes(seed)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Atrium demo"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(seed[:8], "big"))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, None)
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return DemoCertificate(
        common_name=common_name,
        body=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        private_key=base64.b64encode(pem_key).decode("ascii"),
        active=active,
    )


def demo_certificates() -> list[DemoCertificate]:
    """Three certificates: two active, one deactivated."""
    return [
        make_certificate("www.atrium.example", active=True),
        make_certificate("api.atrium.example", active=True),
        make_certificate("legacy.atrium.example", active=False),
    ]

"""Encryption at rest of certificate private keys: AES-256-GCM under a key ring.

``ATRIUM_ENCRYPTION_KEY`` is a comma-separated list of ``KID:BASE64KEY`` entries, each key 32
random bytes (standard or URL-safe base64). The first entry encrypts; every entry decrypts, so a
rotation is: put the new key first, keep the old ones, run ``atrium certificates reencrypt``,
then drop the old ones.

A stored value is ``KID:BASE64(nonce || ciphertext || tag)`` with a fresh 96-bit nonce. The
associated data names the certificate and its owner, so a ciphertext copied into another row
does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyringError(ValueError):
    """The key ring setting is malformed."""


class DecryptionError(Exception):
    """A stored value does not decrypt: unknown key id, tampered, or bound to another row."""


def _decode_key(kid: str, encoded: str) -> bytes:
    # Accept the URL-safe alphabet too: people paste keys from either kind of tool.
    normalized = encoded.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"key {kid!r} is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"key {kid!r} must be {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def new_key_entry(kid: str) -> str:
    """A fresh ``KID:BASE64KEY`` entry for ``ATRIUM_ENCRYPTION_KEY``."""
    if not KID_PATTERN.match(kid):
        raise KeyringError("key ids are 1-32 characters of A-Z a-z 0-9 _ -")
    return f"{kid}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def certificate_aad(certificate_id: int, user_id: int) -> bytes:
    """Associated data binding a private key's ciphertext to its certificate and owner."""
    return f"atrium:certificate-private-key:v1:{certificate_id}:{user_id}".encode()


@dataclass(frozen=True)
class Keyring:
    """Ordered AES-GCM keys by id; the first one is current."""

    current: str
    _keys: dict[str, AESGCM] = field(repr=False)

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Build from ``KID:BASE64KEY[,KID:BASE64KEY...]`` (never echoes key material)."""
        keys: dict[str, AESGCM] = {}
        for entry in (part.strip() for part in spec.split(",")):
            if not entry:
                continue
            kid, sep, encoded = entry.partition(":")
            kid = kid.strip()
            if not sep or not KID_PATTERN.match(kid):
                raise KeyringError(
                    "ATRIUM_ENCRYPTION_KEY entries look like KID:BASE64KEY "
                    "(KID: 1-32 of A-Z a-z 0-9 _ -)"
                )
            if kid in keys:
                raise KeyringError(f"key id {kid!r} appears twice")
            keys[kid] = AESGCM(_decode_key(kid, encoded.strip()))
        if not keys:
            raise KeyringError("ATRIUM_ENCRYPTION_KEY holds no key")
        return cls(current=next(iter(keys)), _keys=keys)

    @property
    def key_ids(self) -> list[str]:
        """Every known key id, current first."""
        return list(self._keys)

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        """Encrypt under the current key; the result names that key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[self.current].encrypt(nonce, plaintext, aad)
        return f"{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, aad: bytes) -> bytes:
        """Decrypt a stored value with the key it names."""
        kid, _, encoded = stored.partition(":")
        key = self._keys.get(kid)
        if key is None:
            raise DecryptionError(f"no key with id {kid!r} is configured")
        try:
            raw = base64.b64decode(encoded, validate=True)
            return key.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise DecryptionError("stored private key failed authentication") from exc

    @staticmethod
    def key_id_of(stored: str) -> str:
        """The key id a stored value was encrypted with."""
        return stored.partition(":")[0]

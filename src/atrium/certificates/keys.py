"""Where the domain's secrets come from: the environment, or files the embedded default makes.

With ``ATRIUM_ENCRYPTION_KEY`` / ``ATRIUM_TOKEN_SECRET`` set, those are used. The embedded
default (SQLite) generates each one on first start into ``DATA_DIR`` (``encryption_key``,
``token_secret``; mode 0600) so a newcomer needs no set-up; so does ``ATRIUM_ENV=test``, whose
databases are throw-away. A PostgreSQL deployment must configure both: a key generated on one
replica would not exist on the others, so the service refuses to start without them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from atrium.certificates.crypto import Keyring, new_key_entry
from atrium.certificates.tokens import MIN_SECRET_BYTES
from atrium.settings import Settings

log = logging.getLogger("atrium.certificates")

ENCRYPTION_KEY_FILE = "encryption_key"
TOKEN_SECRET_FILE = "token_secret"  # noqa: S105 (a file name)


class MissingSecretError(RuntimeError):
    """A secret the configuration must provide is missing; the service cannot start."""


def may_generate_secrets(settings: Settings) -> bool:
    """Only a single-host setup may invent its own secrets."""
    return settings.is_embedded or settings.env == "test"


def read_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """Read ``path``, or atomically create it (mode 0600) with ``make()`` if it does not exist.

    Several processes starting at once agree on one value: the file appears complete or not at
    all (written aside, then hard-linked into place, which fails if another process won).
    """
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (make() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        log.warning("generated a new secret", extra={"path": str(path)})
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path)


def _read(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "secret file is readable by others", extra={"path": str(path), "mode": oct(mode)}
        )
    value = path.read_text().strip()
    if not value:
        raise MissingSecretError(f"{path} is empty; delete it or put the secret in it")
    return value


def load_keyring(settings: Settings) -> Keyring:
    """The configured key ring, or the generated one of the embedded default."""
    if settings.encryption_key is not None:
        return Keyring.parse(settings.encryption_key.get_secret_value())
    if not may_generate_secrets(settings):
        raise MissingSecretError(
            "ATRIUM_ENCRYPTION_KEY is required with PostgreSQL (every replica must share it); "
            "generate one with `atrium certificates generate-key`"
        )
    kid = time.strftime("k%Y%m%d", time.gmtime())
    return Keyring.parse(
        read_or_create_secret(settings.data_dir / ENCRYPTION_KEY_FILE, lambda: new_key_entry(kid))
    )


def load_token_secret(settings: Settings) -> bytes:
    """The configured bearer-token signing secret, or the generated one."""
    if settings.token_secret is not None:
        value = settings.token_secret.get_secret_value().encode()
        if len(value) < MIN_SECRET_BYTES:
            raise MissingSecretError(
                f"ATRIUM_TOKEN_SECRET must be at least {MIN_SECRET_BYTES} characters (an HS256 key "
                "is 256 bits or more, RFC 7518 section 3.2); generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value
    if not may_generate_secrets(settings):
        raise MissingSecretError(
            "ATRIUM_TOKEN_SECRET is required with PostgreSQL (every replica must share it); "
            "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    path = settings.data_dir / TOKEN_SECRET_FILE
    return read_or_create_secret(path, lambda: secrets.token_urlsafe(32)).encode()

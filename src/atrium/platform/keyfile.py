"""The embedded default's first admin API key, kept in ``DATA_DIR/admin_api_key`` (mode 0600).

Keys are stored hashed, so the key ``atrium serve`` creates at first start could otherwise only
be read off the terminal once. On a single machine the data folder already holds the secrets
that matter more (the SQLite file, the encryption key, the token secret, all 0600), so the key
sits beside them, for ``atrium demo`` and for a user who missed the banner. Deleting the file
changes nothing but that convenience; revoke the key with ``atrium apikeys revoke``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from atrium.settings import Settings

ADMIN_KEY_FILE = "admin_api_key"


def admin_key_path(settings: Settings) -> Path:
    """Where the first admin key is kept."""
    return settings.data_dir / ADMIN_KEY_FILE


def save_admin_key(settings: Settings, key: str) -> Path:
    """Write the key atomically, readable by the owner only; returns the file's path."""
    path = admin_key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def read_admin_key(settings: Settings) -> str | None:
    """The saved first admin key, or ``None`` if there is none."""
    try:
        value = admin_key_path(settings).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None

"""Errors of the hr domain, each rendered as a problem document with its own ``type``."""

from __future__ import annotations

from atrium.platform.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable


class UnknownTable(NotFound):
    """The path names a table that is not one of the HR tables."""

    slug, title = "unknown-table", "Unknown HR table"


class ConcurrentWrite(Conflict):
    """Another transaction wrote the same ids meanwhile; nothing was stored."""

    slug, title = "concurrent-write", "Concurrent write of the same rows"


class ReferenceGone(Conflict):
    """A referenced department or job disappeared during the load; nothing was stored."""

    slug, title = "reference-gone", "Referenced row deleted meanwhile"


class BackupNotFound(NotFound):
    """No complete backup has this id."""

    slug, title = "backup-not-found", "Backup not found"


class BackupCorrupt(Conflict):
    """A backup file is missing, altered (sha256 mismatch) or not valid Avro."""

    slug, title = "backup-corrupt", "Backup is corrupt or was tampered with"


class RestoreConflict(Conflict):
    """Restoring would break a foreign key (e.g. employees naming departments left out)."""

    slug, title = "restore-conflict", "Restore would break referential integrity"


class UnsupportedUpload(Unprocessable):
    """The upload is neither a CSV body nor a multipart form with a ``file`` field."""

    slug, title = "unsupported-upload", "Unsupported upload"


class BackupStoreUnavailable(ServiceUnavailable):
    """The configured backup store cannot be used by this build."""

    slug, title = "backup-store-unavailable", "Backup store unavailable"

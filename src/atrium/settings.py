"""One typed, fail-fast configuration object, read from ``ATRIUM_*`` variables and ``.env``."""

from __future__ import annotations

import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]

_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TABLE_NAME = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}")


def _split_commas(value: object) -> object:
    """Accept ``A,B`` (how people write it in env files) as well as a real list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service. The README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(
        env_prefix="ATRIUM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- runtime -------------------------------------------------------------------------
    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    replica_name: str = Field(default_factory=socket.gethostname)
    # --- serving (deploy) ---
    graceful_timeout: int = Field(default=30, ge=1, le=3600)
    keepalive_timeout: int = Field(default=20, ge=1, le=3600)
    worker_timeout: int = Field(default=60, ge=2, le=3600)
    max_requests: int = Field(default=0, ge=0)
    backlog: int = Field(default=2048, ge=16, le=65535)
    trusted_proxies: CommaList = Field(default_factory=list)

    # --- storage -------------------------------------------------------------------------
    database_url: str | None = None
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    auto_migrate: bool | None = None
    redis_url: str | None = None
    redis_prefix: str = ""

    # --- HTTP limits ---------------------------------------------------------------------
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1024)

    # --- logging / metrics / tracing -----------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = True
    metrics_enabled: bool = True
    metrics_scope: str | None = None
    metrics_db_probe_table: str = "alembic_version"
    metrics_db_probe_column: str = "version_num"
    metrics_db_probe_interval: float = Field(default=15.0, gt=0)
    tracing_enabled: bool | None = None  # unset: on when OTEL_EXPORTER_OTLP_ENDPOINT is set

    # --- HR ------------------------------------------------------------------------------
    backup_dir: Path | None = None
    backup_url: str | None = None
    hr_reject_list_cap: int = Field(default=1000, ge=0)

    # --- market --------------------------------------------------------------------------
    market_symbols: CommaList = Field(default_factory=lambda: ["IBM", "AAPL"])
    market_days: int = Field(default=14, ge=1, le=3650)
    alphavantage_api_key: SecretStr | None = None
    alphavantage_url: str = "https://www.alphavantage.co/query"
    alphavantage_timeout: float = Field(default=10.0, gt=0)
    alphavantage_retries: int = Field(default=3, ge=0, le=10)

    # --- certificates --------------------------------------------------------------------
    encryption_key: SecretStr | None = None
    token_secret: SecretStr | None = None
    access_token_ttl_seconds: int = Field(default=3600, ge=60)
    cert_webhook_url: str | None = None
    cert_webhook_secret: SecretStr | None = None
    auth_rate_limit: int = Field(default=20, ge=1)
    # Stand-in for the platform's API keys: this key (sent as X-API-KEY) may act on any user.
    admin_api_key: SecretStr | None = None
    cert_webhook_timeout: float = Field(default=10.0, gt=0, le=300)
    cert_webhook_backoff_seconds: float = Field(default=1.0, gt=0)
    cert_webhook_backoff_max_seconds: float = Field(default=300.0, gt=0)
    cert_webhook_poll_seconds: float = Field(default=5.0, gt=0)

    # --- API keys, limits, cache, idempotency --------------------------------------------
    anonymous_scopes: CommaList = Field(default_factory=list)
    rate_limit: int = Field(default=600, ge=1)
    rate_limit_fail_open: bool = True
    cache_ttl_seconds: int = Field(default=300, ge=1)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)

    _split = field_validator(
        "trusted_proxies", "market_symbols", "anonymous_scopes", mode="before"
    )(_split_commas)

    @field_validator("metrics_db_probe_table", "metrics_db_probe_column")
    @classmethod
    def _sql_identifier(cls, value: str, info: ValidationInfo) -> str:
        # These names are spliced into the probe's SQL: only plain identifiers may pass.
        pattern = _TABLE_NAME if info.field_name == "metrics_db_probe_table" else _COLUMN_NAME
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not a plain SQL identifier")
        return value

    @field_validator("market_symbols")
    @classmethod
    def _upper_symbols(cls, value: list[str]) -> list[str]:
        return [symbol.upper() for symbol in value]

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        # Outside development a missing secret is a misconfiguration, not something to paper
        # over with a generated value that would differ between replicas.
        if self.env == "production" and not self.is_embedded:
            missing = [
                name
                for name, value in (
                    ("ATRIUM_ENCRYPTION_KEY", self.encryption_key),
                    ("ATRIUM_TOKEN_SECRET", self.token_secret),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"production with a database server needs {', '.join(missing)}")
        return self

    @property
    def is_embedded(self) -> bool:
        """True for the zero-dependency default: SQLite file and in-process cache/limiter."""
        return self.database_url is None or self.database_url.startswith("sqlite")

    @property
    def sqlalchemy_url(self) -> str:
        """The configured URL with our async driver; users write plain ``postgresql://``."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'atrium.db').resolve()}"
        return to_async_url(self.database_url)

    @property
    def resolved_backup_dir(self) -> Path:
        """Where local Avro backups go when no object store is configured."""
        return self.backup_dir if self.backup_dir is not None else self.data_dir / "backups"

    @property
    def should_auto_migrate(self) -> bool:
        """The embedded default migrates itself; a cluster runs ``atrium migrate`` once."""
        return self.is_embedded if self.auto_migrate is None else self.auto_migrate


def to_async_url(url: str) -> str:
    """Map a plain database URL to the async driver we measured fastest for its engine.

    ``postgresql://`` → asyncpg, ``mysql://``/``mariadb://`` → asyncmy, ``sqlite://`` →
    aiosqlite; a ``+driver`` the user wrote is replaced, since only these are tested.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("database URL must look like postgresql://user@host/db")
    base = scheme.split("+", 1)[0]
    if base in {"postgres", "postgresql"}:
        # asyncpg calls libpq's ``sslmode`` just ``ssl``; accept what users copy from libpq docs.
        return "postgresql+asyncpg://" + rest.replace("sslmode=", "ssl=")
    if base in {"mysql", "mariadb"}:
        # One dialect name for both servers: SQLAlchemy tells MariaDB from MySQL on connect.
        return "mysql+asyncmy://" + rest
    if base == "sqlite":
        return "sqlite+aiosqlite://" + rest
    raise ValueError(
        f"unsupported database scheme {scheme!r}: use postgresql://, mysql://, mariadb:// "
        "or sqlite://"
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()

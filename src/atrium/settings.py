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
    """Every knob of the service; `docs/configuration.md` shows the table generated from it."""

    model_config = SettingsConfigDict(
        env_prefix="ATRIUM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Each setting's docstring is its description: the docs' settings table is built from
        # them, and the docs build fails if one is missing.
        use_attribute_docstrings=True,
    )

    # --- runtime -------------------------------------------------------------------------
    env: Literal["development", "production", "test"] = "development"
    """`production` refuses to start on a server database without `ENCRYPTION_KEY` and
    `TOKEN_SECRET`; `test` generates them like the embedded default.
    """
    data_dir: Path = Path("data")
    """Folder of the embedded default: the SQLite file, generated keys, local backups."""
    host: str = "127.0.0.1"
    """Address `atrium serve` binds."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port `atrium serve` listens on."""
    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes `atrium serve` runs."""
    replica_name: str = Field(default_factory=socket.gethostname)
    """Sent as `X-Atrium-Replica` on every response."""
    # --- serving (deploy) ---
    graceful_timeout: int = Field(default=30, ge=1, le=3600)
    """Seconds in-flight requests get to finish after SIGTERM (the master allows 5 more for
    shutdown).
    """
    keepalive_timeout: int = Field(default=20, ge=1, le=3600)
    """Seconds an idle keep-alive connection stays open; keep it above the balancer's upstream idle
    timeout (nginx: 15).
    """
    worker_timeout: int = Field(default=60, ge=2, le=3600)
    """A worker whose event loop is blocked this many seconds is killed and replaced."""
    max_requests: int = Field(default=0, ge=0)
    """Recycle a worker after this many requests (±10 % jitter); 0 turns it off."""
    backlog: int = Field(default=2048, ge=16, le=65535)
    """Listen backlog of the server socket."""
    trusted_proxies: CommaList = Field(default_factory=list)
    """Comma-separated addresses or CIDRs whose `X-Forwarded-For` is believed."""

    # --- storage -------------------------------------------------------------------------
    database_url: str | None = None
    """e.g. `postgresql://user:pass@host:5432/atrium` (a plain URL; asyncpg is used). Unset: SQLite
    in `DATA_DIR`.
    """
    db_pool_size: int = Field(default=10, ge=1)
    """Connections kept in each process's pool."""
    db_max_overflow: int = Field(default=10, ge=0)
    """Connections a pool may open beyond `DB_POOL_SIZE` under load."""
    db_pool_timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for a pooled connection."""
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    """PostgreSQL `statement_timeout` of the API's connections (0: none)."""
    db_client_check_interval_ms: int = Field(default=1000, ge=0)
    """PostgreSQL `client_connection_check_interval` of the API's connections (PostgreSQL ≥ 14):
    a statement whose process died stops within this time, releasing its locks (0: off).
    """
    auto_migrate: bool | None = None
    """Migrate at start-up. Unset: on for SQLite, off for a server database (a cluster runs `atrium
    migrate` once instead).
    """
    redis_url: str | None = None
    """e.g. `redis://host:6379/0`: shared cache, rate limits, API keys. Unset: in-process."""
    redis_prefix: str = ""
    """Prefix of every Redis key (lets tests and tenants share a server)."""

    # --- HTTP limits ---------------------------------------------------------------------
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """Largest JSON request body (413 beyond)."""
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1024)
    """Largest CSV upload (streamed, so memory stays flat)."""

    # --- logging / metrics / tracing -----------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Lowest level logged."""
    log_json: bool = True
    """JSON lines on stdout; `false` for plain text."""
    metrics_enabled: bool = True
    """Serve `/metrics`."""
    metrics_scope: str | None = None
    """API-key scope required for `/metrics` (open when unset)."""
    metrics_db_probe_table: str = "alembic_version"
    """Table the periodic database latency probe reads (a plain identifier; `schema.table`
    allowed).
    """
    metrics_db_probe_column: str = "version_num"
    """Column the database latency probe reads (a plain identifier)."""
    metrics_db_probe_interval: float = Field(default=15.0, gt=0)
    """Seconds between two database latency probes."""
    tracing_enabled: bool | None = None  # unset: on when OTEL_EXPORTER_OTLP_ENDPOINT is set
    """`true`/`false` forces OpenTelemetry tracing on/off. Unset: on when
    `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_TRACES_EXPORTER`) is set.
    """

    # --- HR ------------------------------------------------------------------------------
    backup_dir: Path | None = None
    """Where HR Avro backups go. Unset: `DATA_DIR/backups`."""
    backup_url: str | None = None
    """`s3://bucket/prefix`: HR backups in object storage instead (AWS variables for credentials).
    """
    hr_reject_list_cap: int = Field(default=1000, ge=0)
    """Most rejected rows listed in a CSV ingest summary (the count is always exact)."""

    # --- market --------------------------------------------------------------------------
    market_symbols: CommaList = Field(default_factory=lambda: ["IBM", "AAPL"])
    """Comma-separated symbols `atrium market sync` fetches."""
    market_days: int = Field(default=14, ge=1, le=3650)
    """Calendar days of history kept per sync."""
    alphavantage_api_key: SecretStr | None = None
    """AlphaVantage API key (never logged)."""
    alphavantage_url: str = "https://www.alphavantage.co/query"
    """AlphaVantage endpoint."""
    alphavantage_timeout: float = Field(default=10.0, gt=0)
    """Seconds per AlphaVantage request."""
    alphavantage_retries: int = Field(default=3, ge=0, le=10)
    """Retries (with backoff) of a failed AlphaVantage request."""

    # --- certificates --------------------------------------------------------------------
    encryption_key: SecretStr | None = None
    """Comma-separated `KID:BASE64KEY` keys encrypting certificate private keys at rest (the first
    encrypts, all decrypt). Unset: generated into `DATA_DIR` (embedded default only).
    """
    token_secret: SecretStr | None = None
    """Signs bearer tokens (HS256: 32+ characters). Unset: generated into `DATA_DIR` (embedded
    default only).
    """
    access_token_ttl_seconds: int = Field(default=3600, ge=60)
    """Bearer token lifetime in seconds."""
    cert_webhook_url: str | None = None
    """Where certificate (de)activations are POSTed."""
    cert_webhook_secret: SecretStr | None = None
    """HMAC key signing the webhooks."""
    auth_rate_limit: int = Field(default=20, ge=1)
    """Registrations and logins per minute per client address."""
    # Stand-in for the platform's API keys: this key (sent as X-API-KEY) may act on any user.
    admin_api_key: SecretStr | None = None
    """Legacy static `X-API-KEY` that may act on any user (prefer a key with the `admin` scope).
    Unset: none.
    """
    cert_webhook_timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds per webhook delivery attempt."""
    cert_webhook_backoff_seconds: float = Field(default=1.0, gt=0)
    """First webhook retry delay in seconds (doubling, half jittered)."""
    cert_webhook_backoff_max_seconds: float = Field(default=300.0, gt=0)
    """Longest webhook retry delay in seconds."""
    cert_webhook_poll_seconds: float = Field(default=5.0, gt=0)
    """How often an idle delivery worker looks for events written by other processes."""

    # --- API keys, limits, cache, idempotency --------------------------------------------
    anonymous_scopes: CommaList = Field(default_factory=list)
    """Comma-separated scopes granted to callers without an API key (e.g. `market:read`)."""
    rate_limit: int = Field(default=600, ge=1)
    """Requests per minute per API key (per client address when anonymous)."""
    rate_limit_fail_open: bool = True
    """Keep serving without limits while Redis is down (`false`: answer 503)."""
    cache_ttl_seconds: int = Field(default=300, ge=1)
    """Upper bound on any cache entry's life, in seconds."""
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)
    """How long an `Idempotency-Key` is remembered, in seconds."""

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

"""Every Prometheus metric Atrium exports, declared in one place so names never drift.

Domains import the objects and ``inc()``/``observe()`` them; ``/metrics`` exposition, the
request middleware and multiprocess aggregation live beside this module. Labels are bounded
(route templates, table names, outcomes): never raw paths, ids or keys.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# ``*_created`` series double every counter's cardinality and no dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# --- process ------------------------------------------------------------------------------
BUILD_INFO = Gauge(
    "atrium_build_info",
    "Always 1; the version label says which Atrium is running.",
    ["version"],
    multiprocess_mode="livemax",
)

# --- HTTP ---------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "atrium_http_requests", "HTTP requests served.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "atrium_http_request_duration_seconds",
    "Time to serve a request.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "atrium_http_requests_in_flight",
    "Requests being served now.",
    multiprocess_mode="livesum",
)
HTTP_EXCEPTIONS = Counter(
    "atrium_http_exceptions", "Unhandled exceptions while serving.", ["route", "exception"]
)

# --- database -----------------------------------------------------------------------------
DB_POOL = Gauge(
    "atrium_db_pool_connections",
    "Connections of the pool by state.",
    ["state"],
    multiprocess_mode="livesum",
)
DB_PROBE_LATENCY = Gauge(
    "atrium_db_probe_latency_seconds",
    "Latency of the periodic database probe query.",
    # "live": a dead worker's last reading must not stay the maximum forever.
    multiprocess_mode="livemax",
)
DB_PROBE_FAILURES = Counter("atrium_db_probe_failures", "Database probe queries that failed.")

# --- platform -----------------------------------------------------------------------------
CACHE_REQUESTS = Counter("atrium_cache_requests", "Cache look-ups by result.", ["cache", "result"])
RATE_LIMIT_REJECTIONS = Counter(
    "atrium_rate_limit_rejections", "Requests refused with 429.", ["bucket"]
)
RATE_LIMIT_BACKEND_ERRORS = Counter(
    "atrium_rate_limit_backend_errors", "Rate-limit checks that could not reach Redis."
)
API_KEY_FAILURES = Counter(
    "atrium_api_key_failures", "Requests refused for their API key.", ["reason"]
)
IDEMPOTENT_REPLAYS = Counter(
    "atrium_idempotency_replays", "Responses replayed for a repeated Idempotency-Key."
)

# --- HR -----------------------------------------------------------------------------------
HR_ROWS_INGESTED = Counter("atrium_hr_rows_ingested", "HR rows stored.", ["table", "source"])
HR_ROWS_REJECTED = Counter(
    "atrium_hr_rows_rejected", "HR rows rejected by validation.", ["table", "source"]
)
HR_BACKUP_DURATION = Histogram(
    "atrium_hr_backup_duration_seconds",
    "Time to write a full Avro backup.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
HR_RESTORE_DURATION = Histogram(
    "atrium_hr_restore_duration_seconds",
    "Time to restore tables from a backup.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)

# --- market -------------------------------------------------------------------------------
MARKET_SYNCS = Counter(
    "atrium_market_syncs", "AlphaVantage fetches by symbol and outcome.", ["symbol", "outcome"]
)

# --- certificates -------------------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "atrium_webhook_deliveries", "Webhook delivery attempts by outcome.", ["outcome"]
)
WEBHOOK_RETRIES = Counter("atrium_webhook_retries", "Webhook deliveries scheduled for retry.")

"""OpenTelemetry traces: off by default, configured by the standard ``OTEL_*`` variables.

FastAPI itself opens the server span of each request (its native telemetry, given our tracer
provider); this module adds client spans for SQL (SQLAlchemy), outgoing HTTP (httpx) and Redis,
and exports everything over OTLP/HTTP. When tracing is off nothing is installed, so a request
costs no more than without this module.

Query strings and URLs are put through :func:`atrium.platform.redaction.redact` when a span
starts: ``?apikey=…`` (AlphaVantage) would otherwise travel to the collector.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from atrium import __version__
from atrium.platform.redaction import redact
from atrium.settings import Settings

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.context import Context
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("atrium.tracing")

# Span attributes that can carry a query string or a whole URL.
_URL_ATTRIBUTES = ("url.query", "url.full", "http.url", "http.target")


def tracing_requested(settings: Settings) -> bool:
    """``ATRIUM_TRACING_ENABLED`` when set, else whether an OTLP endpoint or exporter is set."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if settings.tracing_enabled is not None:
        return settings.tracing_enabled
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def fastapi_telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """FastAPI's native telemetry: server spans with our provider, nothing at all without one."""
    return {
        "tracer_provider": provider,
        "tracing": provider is not None,
        # Metrics are Prometheus' job and logs go to stdout; neither goes through OTel.
        "metrics": False,
        "logs": False,
        "auto_configure": False,
    }


def build_tracer_provider(settings: Settings) -> TracerProvider:
    """A provider exporting to what ``OTEL_TRACES_EXPORTER`` / ``OTEL_EXPORTER_OTLP_*`` name."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    attributes: dict[str, Any] = {
        "service.version": __version__,
        "service.instance.id": f"{settings.replica_name}:{os.getpid()}",
    }
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "atrium"
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG); the batching from OTEL_BSP_*.
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(RedactingSpanProcessor())
    exporter: SpanExporter
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    elif kind == "otlp":
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        if protocol != "http/protobuf":
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: use http/protobuf"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={kind} is not supported: use otlp or console")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class RedactingSpanProcessor(SpanProcessor):
    """Masks credentials in URL attributes as each span starts (before any export)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Rewrite URL-shaped attributes with their secrets masked."""
        attributes = span.attributes or {}
        for name in _URL_ATTRIBUTES:
            value = attributes.get(name)
            if isinstance(value, str):
                masked = redact(value)
                if masked != value:
                    span.set_attribute(name, masked)

    def on_end(self, span: ReadableSpan) -> None:
        """Nothing to do once a span ended."""


class Tracing:
    """The instrumentation of one application: installed in its lifespan, removed after."""

    def __init__(self, provider: TracerProvider, *, owned: bool) -> None:
        self.provider = provider
        self.owned = owned
        self._instrumentors: list[Any] = []

    def start(self, engine: AsyncEngine) -> None:
        """Trace SQL on ``engine`` and every httpx and Redis client of the process."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeterProvider

        # The per-engine tracer, not SQLAlchemyInstrumentor: that one patches create_engine
        # process-wide and refuses SQLAlchemy 2.1 by its declared (not actual) range.
        connections = (
            NoOpMeterProvider().get_meter("atrium").create_up_down_counter("db.connections")
        )
        EngineTracer(  # type: ignore[no-untyped-call]
            self.provider.get_tracer("atrium.sql"), engine.sync_engine, connections
        )
        for instrumentor in (HTTPXClientInstrumentor(), RedisInstrumentor()):
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=self.provider)
                self._instrumentors.append(instrumentor)

    def stop(self) -> None:
        """Undo the process-wide patches and flush what is still buffered."""
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self._instrumentors.clear()
        if self.owned:
            self.provider.shutdown()
        else:
            self.provider.force_flush()


def setup_tracing(settings: Settings, provider: TracerProvider | None) -> Tracing | None:
    """The application's tracing: ``provider`` (tests), one built from ``OTEL_*``, or none."""
    if provider is not None:
        return Tracing(provider, owned=False)
    if not tracing_requested(settings):
        return None
    from opentelemetry import trace

    built = build_tracer_provider(settings)
    # Global too, so code that asks ``trace.get_tracer()`` for its own spans joins the trace.
    trace.set_tracer_provider(built)
    log.info("tracing enabled", extra={"exporter": os.environ.get("OTEL_TRACES_EXPORTER", "otlp")})
    return Tracing(built, owned=True)

"""Traces: one request → a server span with child spans for its SQL (and Redis) calls, the trace
id in the request's log lines, secrets masked in span URLs, and OTLP export by ``OTEL_*``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from atrium.app import create_app
from atrium.platform.tracing import RedactingSpanProcessor, tracing_requested
from atrium.settings import Settings
from tests.support import ServerProcess, run_server, secret, settings_env

QUERY_KEY = secret("TRACEQUERYKEY42")


@pytest.fixture(scope="module")
async def traced(settings: Settings) -> AsyncIterator[tuple[FastAPI, InMemorySpanExporter]]:
    """An app of its own whose spans land in memory (as the OTLP set-up does, redaction first)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, tracer_provider=provider)
    async with app.router.lifespan_context(app):
        yield app, exporter


def descends_from(
    span: ReadableSpan, ancestor: ReadableSpan, spans: Sequence[ReadableSpan]
) -> bool:
    """Whether ``ancestor`` is on ``span``'s parent chain."""
    by_id = {s.context.span_id: s for s in spans}
    parent = span.parent
    while parent is not None:
        if parent.span_id == ancestor.context.span_id:
            return True
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return False


async def test_request_has_server_span_with_sql_children_and_trace_in_logs(
    traced: tuple[FastAPI, InMemorySpanExporter], log_lines: list[dict[str, Any]]
) -> None:
    app, exporter = traced
    exporter.clear()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/readyz", headers={"X-Request-ID": "traced-1"})
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.name == "GET /readyz"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/readyz"
    assert server.attributes["http.response.status_code"] == 200
    trace_id = server.context.trace_id
    sql = [
        s
        for s in spans
        if s.kind is SpanKind.CLIENT
        and s.attributes is not None
        and ("db.statement" in s.attributes or "db.query.text" in s.attributes)
        and s.context.trace_id == trace_id
    ]
    # SELECT 1 and the migration check at least.
    assert len(sql) >= 2
    assert all(descends_from(s, server, spans) for s in sql)
    statements = " ".join(
        str(s.attributes.get("db.statement", s.attributes.get("db.query.text")))
        for s in sql
        if s.attributes is not None
    )
    assert "alembic_version" in statements
    if app.state.redis is not None:
        redis = [
            s
            for s in spans
            if s.context.trace_id == trace_id
            and s.attributes is not None
            and s.attributes.get("db.system") == "redis"
        ]
        assert redis, [s.name for s in spans]
        assert all(descends_from(s, server, spans) for s in redis)

    mine = [line for line in log_lines if line.get("request_id") == "traced-1"]
    assert mine
    assert {line["trace_id"] for line in mine} == {format(trace_id, "032x")}


async def test_secrets_in_urls_are_masked_in_spans(
    traced: tuple[FastAPI, InMemorySpanExporter], live_server: ServerProcess
) -> None:
    app, exporter = traced
    exporter.clear()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get(f"/livez?apikey={QUERY_KEY}&x=1")).status_code == 200
    # An outgoing call (as the market sync makes): httpx is instrumented while tracing is on.
    async with httpx.AsyncClient() as outgoing:
        response = await outgoing.get(f"{live_server.url}/livez?apikey={QUERY_KEY}")
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.attributes is not None
    assert server.attributes["url.query"] == "apikey=***&x=1"
    (outgoing_span,) = [
        s
        for s in spans
        if s.kind is SpanKind.CLIENT
        and s.attributes is not None
        and str(s.attributes.get("url.full", s.attributes.get("http.url", ""))).startswith(
            live_server.url
        )
    ]
    assert outgoing_span.attributes is not None
    url = str(outgoing_span.attributes.get("url.full", outgoing_span.attributes.get("http.url")))
    assert QUERY_KEY not in url
    assert url.endswith("apikey=***")
    everything = repr([dict(s.attributes or {}) for s in spans])
    assert QUERY_KEY not in everything


async def test_untraced_app_writes_no_trace_ids(
    client: httpx.AsyncClient, log_lines: list[dict[str, Any]]
) -> None:
    await client.get("/livez", headers={"X-Request-ID": "untraced-1"})
    (access,) = [line for line in log_lines if line.get("request_id") == "untraced-1"]
    assert "trace_id" not in access


@pytest.mark.parametrize(
    ("env", "enabled", "expected"),
    [
        ({}, None, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, None, False),
        ({}, True, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False, False),
        ({"OTEL_SDK_DISABLED": "true"}, True, False),
    ],
)
def test_tracing_is_off_unless_asked_for(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], enabled: bool | None, expected: bool
) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None, tracing_enabled=enabled)  # type: ignore[call-arg]
    assert tracing_requested(settings) is expected


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_server_exports_traces_over_otlp(settings: Settings, tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    collector = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    env = settings_env(
        settings,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}",
        OTEL_SERVICE_NAME="atrium-otlp-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    try:
        with run_server(env, tmp_path) as server:
            response = httpx.get(f"{server.url}/readyz", headers={"X-Request-ID": "otlp-1"})
            assert response.status_code == 200
            spans: list[Any] = []
            services: set[str] = set()
            deadline = time.monotonic() + 20
            while not any(s.name == "GET /readyz" for s in spans):
                assert time.monotonic() < deadline, f"no server span exported: {received}"
                time.sleep(0.1)
                spans, services = [], set()
                for path, body in list(received):
                    assert path == "/v1/traces"
                    export = ExportTraceServiceRequest.FromString(body)
                    for resource_spans in export.resource_spans:
                        for attribute in resource_spans.resource.attributes:
                            if attribute.key == "service.name":
                                services.add(attribute.value.string_value)
                        for scope_spans in resource_spans.scope_spans:
                            spans.extend(scope_spans.spans)
            output = server.output()
    finally:
        collector.shutdown()
    assert services == {"atrium-otlp-test"}
    (root,) = [s for s in spans if s.name == "GET /readyz"]
    children = [s for s in spans if s.trace_id == root.trace_id and s is not root]
    assert any("alembic_version" in str(s.attributes) for s in children)
    access = [
        json.loads(line)
        for line in output.splitlines()
        if '"request_id":"otlp-1"' in line and '"atrium.access"' in line
    ]
    assert [line["trace_id"] for line in access] == [root.trace_id.hex()]

"""Platform HTTP behaviour: problem documents, request ids, body limits, docs, probes."""

from __future__ import annotations

import httpx

PROBLEM = "application/problem+json"


async def test_unknown_route_is_a_problem_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == "https://atrium.dev/problems/not-found"
    assert body["status"] == 404
    assert body["instance"] == "/no/such/route"


async def test_wrong_method_keeps_allow_header(client: httpx.AsyncClient) -> None:
    response = await client.post("/livez")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/method-not-allowed")


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/livez", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32


async def test_oversized_body_is_refused_with_413(client: httpx.AsyncClient) -> None:
    limit = client._transport.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    response = await client.post(
        "/livez", content=b"x" * (limit + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/payload-too-large")


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["migrations"] == "ok"


async def test_docs_are_served_without_a_cdn(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "/static/docs/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    bundle = await client.get("/static/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert len(bundle.content) > 100_000
    redoc = await client.get("/redoc")
    assert "/static/docs/redoc.standalone.js" in redoc.text
    assert "fonts.googleapis" not in redoc.text


async def test_openapi_declares_problem_responses(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.1")
    assert "Problem" in schema["components"]["schemas"]
    readyz = schema["paths"]["/readyz"]["get"]["responses"]
    assert PROBLEM in readyz["422"]["content"]
    assert PROBLEM in readyz["default"]["content"]

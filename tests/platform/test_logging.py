"""JSON logs: request context on every line, the level setting, and no secret ever written."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, SecretStr

from atrium.app import create_app
from atrium.platform.logging import configure_logging, flush_logs
from atrium.platform.redaction import MASK, redact, register_secrets, settings_secrets
from atrium.settings import Settings
from tests.support import secret

PASSWORD = secret("correct horse battery staple")
BEARER = secret("eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.sig-Xq9")
API_KEY = secret("atr_live_4f9d0c2b7a1e48f3")
QUERY_KEY = secret("AVQUERYKEY12345")
TOKEN_SECRET = secret("token-secret-8c1d93aa07-5e2b4f9d61c3a8")
ALPHA_KEY = secret("ALPHAVANTAGE0KEY9")
DB_PASSWORD = secret("pg-pass-77d1e0")
PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    + secret("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7")
    + "\n"
    + secret("VJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu")
    + "\n-----END PRIVATE KEY-----\n"
)


class Login(BaseModel):
    username: str
    password: str
    private_key: str | None = None


@pytest.fixture
def restore_logging(settings: Settings) -> Iterator[None]:
    """Rebind the stdout handler once ``capsys`` has put the real stdout back."""
    yield
    configure_logging(settings.log_level, json=settings.log_json)


@pytest.fixture(scope="module")
async def careless_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app configured with secrets and routes that log everything they get (a careless
    developer), so only the safety net stands between the secrets and the log."""
    configured = settings.model_copy(
        update={
            "token_secret": SecretStr(TOKEN_SECRET),
            "alphavantage_api_key": SecretStr(ALPHA_KEY),
            "cert_webhook_url": f"https://hooks:{DB_PASSWORD}@example.test/hook",
        }
    )
    app = create_app(configured)
    log = logging.getLogger("atrium.test.careless")

    @app.post("/test-only/login", include_in_schema=False)
    async def login(body: Login, request: Request) -> dict[str, str]:
        log.info("login %s", body.model_dump())
        log.info("login as JSON %s", body.model_dump_json())
        log.info("headers", extra={"headers": dict(request.headers)})
        log.info("url %s", request.url)
        log.info("settings %s", configured.token_secret.get_secret_value())  # type: ignore[union-attr]
        log.info("key", extra={"api_key": request.headers.get("x-api-key"), "password": "x"})
        log.info("webhook %s", configured.cert_webhook_url)
        log.info("certificate key:\n%s", body.private_key)
        raise RuntimeError(f"could not log in {body.username} with password={body.password!r}")

    async with app.router.lifespan_context(app):
        yield app
    # Later tests keep the session app's handler, bound to the stream they capture.
    configure_logging(settings.log_level, json=settings.log_json)


async def test_every_line_of_a_request_carries_its_context(
    careless_app: FastAPI, log_lines: list[dict[str, Any]]
) -> None:
    transport = httpx.ASGITransport(app=careless_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/test-only/login",
            json={"username": "ada", "password": "pw-123456"},
            headers={"X-Request-ID": "req-ctx-1"},
        )
    assert response.status_code == 500
    mine = [line for line in log_lines if line.get("request_id") == "req-ctx-1"]
    by_logger = {line["logger"] for line in mine}
    assert {"atrium.test.careless", "atrium.errors", "atrium.access"} <= by_logger
    # Once routed, every line names the route template.
    assert all(line["route"] == "/test-only/login" for line in mine)
    (access,) = [line for line in mine if line["logger"] == "atrium.access"]
    assert access["method"] == "POST"
    assert access["status"] == 500
    assert isinstance(access["duration_ms"], float)
    assert access["level"] == "info"
    assert access["ts"].endswith("Z")
    # Lines outside a request have no request context.
    logging.getLogger("atrium.test").warning("outside")
    assert "request_id" not in log_lines[-1]
    assert "route" not in log_lines[-1]


async def test_secrets_in_requests_never_reach_the_log(
    careless_app: FastAPI, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # The real output path: the stdout handler the app installs, bound to this test's stdout.
    configure_logging("INFO", json=True)
    transport = httpx.ASGITransport(app=careless_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            f"/test-only/login?apikey={QUERY_KEY}&symbol=IBM",
            json={"username": "ada", "password": PASSWORD, "private_key": PRIVATE_KEY},
            headers={"Authorization": f"Bearer {BEARER}", "X-API-KEY": API_KEY},
        )
        assert response.status_code == 500
        assert PASSWORD not in response.text
    flush_logs()  # lines are written by a background thread
    output = capsys.readouterr().out
    assert "could not log in ada" in output  # the lines were written...
    assert output.count('"logger":"atrium.test.careless"') == 8
    for value in (PASSWORD, BEARER, API_KEY, QUERY_KEY, TOKEN_SECRET, DB_PASSWORD):
        assert value not in output, value[:4]  # ...with every secret masked
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" not in output
    assert "[REDACTED PRIVATE KEY]" in output


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("password=hunter22&user=ada", "hunter22"),
        ('{"password": "two words"}', "two words"),
        ('{\\"password\\": \\"esc aped\\"}', "esc aped"),
        ("GET /market?symbol=IBM&apikey=DEMOKEY123", "DEMOKEY123"),
        ("ATRIUM_TOKEN_SECRET=s3cr3tvalue", "s3cr3tvalue"),
        ("x-api-key: atr_abcdef123456", "atr_abcdef123456"),
        ("{'x-api-key': 'atr_abcdef123456'}", "atr_abcdef123456"),
        ("authorization: Bearer abc.def.ghi123", "abc.def.ghi123"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("postgresql://atrium:dbpass99@db:5432/atrium", "dbpass99"),
        ("redis://:redispass1@cache:6379/0", "redispass1"),
        ("client_secret=abc123XYZ", "abc123XYZ"),
        ("created key atr_q3Jx9mN2pL8vR5tY1wZ7cK4b for ada", "q3Jx9mN2pL8vR5tY1wZ7cK4b"),
        ("private_key='-----BEGIN'", "BEGIN"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\\nMIIBOgIBAAJBAKj34GkxFhD9\\n-----END RSA PRIVATE KEY",
            "MIIBOgIBAAJBAKj34GkxFhD9",
        ),
        (
            "key: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk",
            "MHcCAQEEIBkg4LVWM9nuwNSk",
        ),
    ],
)
def test_redact_masks_credential_shapes(text: str, leaked: str) -> None:
    masked = redact(text)
    assert leaked not in masked
    assert MASK in masked or "[REDACTED PRIVATE KEY]" in masked


@pytest.mark.parametrize(
    "text",
    [
        '{"route":"/hr/{table}","status":200,"duration_ms":1.5}',
        "tokens_used=5 passed=3",
        "GET /market/prices?symbol=IBM",
        "https://example.com/path@v2",
        "atr_short and atr_version",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redacted_json_stays_json() -> None:
    import orjson

    payload = {
        "password": None,
        "token": 12345678,
        "api_key": True,
        "credentials": {"user": "ada", "secret": "s3cr3t-val"},
        "authorization": ["Bearer abcdefgh"],
        "msg": 'body {"password": "in a string"} and password=plain',
    }
    line = redact(orjson.dumps(payload).decode())
    parsed = json.loads(line)
    assert parsed["token"] == MASK
    assert parsed["credentials"] == {"user": "ada", "secret": MASK}
    assert "s3cr3t-val" not in line
    assert "in a string" not in line
    assert "plain" not in line
    assert "abcdefgh" not in line


def test_configured_secret_values_are_masked_anywhere() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        encryption_key=SecretStr("enc-key-0a9b8c7d"),
        database_url="postgresql://atrium:p%40ss-w0rd@db/atrium",
        redis_url="redis://:r3dis-pass@cache:6379/0",
    )
    values = settings_secrets(settings)
    assert {"enc-key-0a9b8c7d", "p%40ss-w0rd", "p@ss-w0rd", "r3dis-pass"} <= set(values)
    register_secrets(values)
    assert redact("loaded enc-key-0a9b8c7d from env") == f"loaded {MASK} from env"
    assert redact("user said p@ss-w0rd") == f"user said {MASK}"
    # Too short to mask everywhere without mangling ordinary words.
    register_secrets(["abc"])
    assert redact("abcdef") == "abcdef"


def test_log_level_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRIUM_LOG_LEVEL", "WARNING")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.log_level == "WARNING"
    root = logging.getLogger()
    previous = root.level
    try:
        configure_logging(settings.log_level)
        assert not logging.getLogger("atrium.access").isEnabledFor(logging.INFO)
        assert logging.getLogger("atrium.access").isEnabledFor(logging.WARNING)
    finally:
        configure_logging(logging.getLevelName(previous))


def test_text_format_masks_too(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=False)
    logging.getLogger("atrium.test").info("password=%s", "plain-text-secret")
    flush_logs()
    output = capsys.readouterr().out
    assert "INFO atrium.test [None] password=***" in output
    assert "plain-text-secret" not in output

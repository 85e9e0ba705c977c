"""Database URLs as users write them, and what a MariaDB/MySQL session runs with."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.platform.db import MYSQL_SQL_MODE, _mysql_tls, create_engine
from atrium.settings import Settings, to_async_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/a", "postgresql+asyncpg://u:p@db:5432/a"),
        ("postgres://u@db/a?sslmode=require", "postgresql+asyncpg://u@db/a?ssl=require"),
        ("mysql://u:p@db:3306/a", "mysql+asyncmy://u:p@db:3306/a"),
        ("mariadb://u:p@db:3306/a", "mysql+asyncmy://u:p@db:3306/a"),
        ("mysql+pymysql://u@db/a", "mysql+asyncmy://u@db/a"),
        ("sqlite:///data/a.db", "sqlite+aiosqlite:///data/a.db"),
    ],
)
def test_plain_urls_get_the_measured_driver(url: str, expected: str) -> None:
    assert to_async_url(url) == expected


@pytest.mark.parametrize("url", ["oracle://u@db/a", "db.example.com/a"])
def test_other_urls_are_refused_with_the_schemes_we_take(url: str) -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        to_async_url(url)


async def test_a_mysql_url_builds_a_mysql_engine_without_connecting() -> None:
    settings = Settings(_env_file=None, database_url="mariadb://u:p@db.invalid:3306/a")  # type: ignore[call-arg]
    engine = create_engine(settings)
    try:
        assert engine.dialect.name == "mysql"
        assert engine.dialect.driver == "asyncmy"
        assert not settings.is_embedded
    finally:
        await engine.dispose()


def test_ssl_mode_is_mapped_to_a_tls_context() -> None:
    url, context = _mysql_tls(make_url("mysql+asyncmy://u@db/a?ssl_mode=REQUIRED&x=1"))
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert dict(url.query) == {"x": "1"}
    _, verified = _mysql_tls(make_url("mysql+asyncmy://u@db/a?ssl-mode=VERIFY_IDENTITY"))
    assert verified is not None
    assert verified.check_hostname
    assert _mysql_tls(make_url("mysql+asyncmy://u@db/a"))[1] is None
    with pytest.raises(ValueError, match="ssl-mode"):
        _mysql_tls(make_url("mysql+asyncmy://u@db/a?ssl_mode=SOMETIMES"))


@pytest.mark.postgres
@pytest.mark.only_on("mysql", reason="checks the session settings Atrium imposes on MariaDB/MySQL")
async def test_mysql_sessions_are_utf8mb4_strict_utc_read_committed(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT @@session.sql_mode, @@session.time_zone, @@character_set_client, "
                    "@@character_set_results, @@session.tx_isolation"
                )
            )
        ).one()
    assert set(row[0].split(",")) >= set(MYSQL_SQL_MODE.split(",")) - {"NO_AUTO_CREATE_USER"}
    assert row[1] == "+00:00"
    assert row[2:4] == ("utf8mb4", "utf8mb4")
    assert row[4] == "READ-COMMITTED"

"""``atrium …``: one command line for every operational task."""

from __future__ import annotations

import asyncio
import os

import click

from atrium.certificates.cli import certificates
from atrium.demo.cli import demo
from atrium.hr.cli import hr
from atrium.market.cli import market
from atrium.platform.apikeys.cli import apikeys, bootstrap_admin_key, print_bootstrap_key
from atrium.platform.db import create_engine
from atrium.platform.keyfile import save_admin_key
from atrium.platform.migrate import upgrade
from atrium.settings import get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atrium")
def main() -> None:
    """Atrium: HR data, certificates, market data and templates behind one REST API."""


@main.command()
@click.option("--host", default=None, help="Bind address [ATRIUM_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [ATRIUM_PORT, default 8000].")
@click.option("--workers", type=int, default=None, help="Worker processes [ATRIUM_WORKERS].")
@click.option(
    "--app",
    default="atrium.app:create_app",
    show_default=True,
    help="ASGI app factory to serve (module:callable), e.g. one that wraps create_app.",
)
def serve(host: str | None, port: int | None, workers: int | None, app: str) -> None:
    """Serve the API: gunicorn + uvicorn workers, graceful drain on SIGTERM."""
    from atrium.platform.supervisor import exec_master

    settings = get_settings()
    if settings.should_auto_migrate:
        # Migrate once here, before workers start, so N workers never race on it.
        asyncio.run(_migrate())
        os.environ["ATRIUM_AUTO_MIGRATE"] = "false"
    # The embedded default's first start creates an admin key and shows it once.
    first_key = asyncio.run(bootstrap_admin_key(settings))
    if first_key is not None:
        print_bootstrap_key(first_key, save_admin_key(settings, first_key))
    workers = workers or settings.workers
    # Worker processes read their settings from the environment; they must know how many
    # siblings they have (the in-process cache turns itself off with more than one).
    os.environ["ATRIUM_WORKERS"] = str(workers)
    # This process has imported prometheus_client (metrics would stay in-process): the master
    # runs in a fresh interpreter that sets up multiprocess metrics first.
    exec_master(host=host or settings.host, port=port or settings.port, workers=workers, app=app)


async def _migrate() -> None:
    engine = create_engine(get_settings())
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@main.command()
def migrate() -> None:
    """Apply every pending database migration."""
    asyncio.run(_migrate())
    click.echo("database is at the latest revision", err=True)


main.add_command(hr)
main.add_command(market)
main.add_command(certificates)
main.add_command(apikeys)
main.add_command(demo)


if __name__ == "__main__":  # pragma: no cover
    main()

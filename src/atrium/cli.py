"""``atrium …``: one command line for every operational task.

Command groups are imported when they run, not when ``atrium`` starts: ``atrium serve`` hands
over to the server process (:mod:`atrium.platform.supervisor`) having imported little more than
its settings, and a one-off command pays only for what it uses.
"""

from __future__ import annotations

import asyncio
import importlib

import click

from atrium.settings import get_settings

# Command name -> "module:attribute" of its click command, imported when it is run (or listed).
LAZY_COMMANDS = {
    "apikeys": "atrium.platform.apikeys.cli:apikeys",
    "certificates": "atrium.certificates.cli:certificates",
    "demo": "atrium.demo.cli:demo",
    "hr": "atrium.hr.cli:hr",
    "market": "atrium.market.cli:market",
}


class LazyGroup(click.Group):
    """A group whose commands in :data:`LAZY_COMMANDS` are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, the lazy ones included."""
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing it if it is a lazy one."""
        spec = LAZY_COMMANDS.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = spec.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{spec} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    # The master migrates (embedded default), makes the first key and forks the workers, in a
    # fresh interpreter that sets up multiprocess metrics before anything imports them.
    exec_master(
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        app=app,
    )


@main.command()
def migrate() -> None:
    """Apply every pending database migration."""
    from atrium.platform.migrate import migrate_database

    asyncio.run(migrate_database(get_settings()))
    click.echo("database is at the latest revision", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()

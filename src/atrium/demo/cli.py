"""``atrium demo``: fill a running server with sample data in every area."""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

import click
import httpx

from atrium.demo.steps import (
    DEMO_USER,
    DemoError,
    Section,
    load_certificates,
    load_hr,
    load_market,
    load_templates,
)
from atrium.platform.keyfile import admin_key_path, read_admin_key
from atrium.settings import Settings, get_settings

STEPS: tuple[Callable[[httpx.Client], Section], ...] = (
    load_hr,
    load_market,
    load_templates,
    load_certificates,
)


def default_url(settings: Settings) -> str:
    """The local server ``atrium serve`` starts with these settings."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind-all address; we connect to loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def is_local(url: str) -> bool:
    """True when the URL names this machine (loopback)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _print(section: Section) -> None:
    click.echo(section.title)
    for line in section.lines:
        click.echo(f"  {line}")


@click.command()
@click.option(
    "--url",
    default=None,
    help="Base URL of the server [default: http://ATRIUM_HOST:ATRIUM_PORT].",
)
@click.option(
    "--api-key",
    default=None,
    help="An API key with the admin scope [default: the one the first start kept in "
    "ATRIUM_DATA_DIR/admin_api_key].",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Load into a server that is not on this machine (the demo user's password is public).",
)
def demo(url: str | None, api_key: str | None, allow_remote: bool) -> None:
    """Load sample data into the running server: HR files, market prices, templates, a user
    with certificates. Running it again changes nothing.
    """
    settings = get_settings()
    base = (url or default_url(settings)).rstrip("/")
    if not is_local(base) and not allow_remote:
        raise click.ClickException(
            f"{base} is not on this machine; the demo creates a user whose password is "
            f"published ({DEMO_USER['email']}), so pass --allow-remote if you mean it"
        )
    key = api_key or read_admin_key(settings)
    if not key:
        raise click.ClickException(
            f"no API key: pass --api-key (the admin key `atrium serve` printed at its first "
            f"start, or one from `atrium apikeys create --owner demo --scopes admin`); "
            f"{admin_key_path(settings)} does not exist"
        )
    source = "--api-key" if api_key else str(admin_key_path(settings))
    failed = False
    with httpx.Client(base_url=base, headers={"X-API-KEY": key}, timeout=120.0) as client:
        try:
            client.get("/livez").raise_for_status()
        except httpx.HTTPError as exc:
            raise click.ClickException(
                f"no Atrium server answers at {base} ({exc}): start one with `make serve` "
                "(or `atrium serve`), or pass --url"
            ) from None
        click.echo(f"Loading sample data into {base} (API key from {source})\n")
        for step in STEPS:
            # The report is the output; a log line per request (httpx logs at INFO, and the
            # market command configures logging) would bury it.
            logging.getLogger("httpx").setLevel(logging.WARNING)
            try:
                section = step(client)
            except DemoError as exc:
                raise click.ClickException(str(exc)) from None
            except httpx.HTTPError as exc:
                raise click.ClickException(f"{base} stopped answering: {exc}") from None
            _print(section)
            failed = failed or not section.ok
    click.echo(
        "\nOpen:\n"
        f"  {base}/charts  the market chart and the hires-by-quarter heatmap "
        "(asks for an API key once)\n"
        f"  {base}/docs    the API, interactive (Authorize with an API key)\n"
        f"  {base}/redoc   the API reference"
    )
    if failed:
        sys.exit(1)

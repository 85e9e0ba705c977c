"""The client's address, believing ``X-Forwarded-For`` only when a trusted proxy sent it.

Rate limits and idempotency scopes key on this address, so a client must not be able to pick
it: the header is read only when the direct peer is one of ``ATRIUM_TRUSTED_PROXIES``
(addresses or CIDR networks), and then walked from the right, skipping our own proxies, to the
first hop none of them vouches for. Everything left of that hop was written by the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN = "unknown"
_MAX_HOPS = 32  # a longer chain is garbage; never spend unbounded time on a header


def _parse_address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443" as some proxies write it
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "10.0.0.1:1234"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientIpResolver:
    """Callable ``scope -> address`` configured with the trusted proxies."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        networks: list[Network] = []
        for entry in trusted_proxies:
            entry = entry.strip()
            if entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
        self.networks = tuple(networks)

    def is_trusted(self, address: Address | None) -> bool:
        """True when ``address`` is one of our proxies."""
        return address is not None and any(address in network for network in self.networks)

    def __call__(self, scope: Scope) -> str:
        """The address to attribute the request to."""
        client = scope.get("client")
        peer_text = str(client[0]) if client else UNKNOWN
        if not self.networks:
            return peer_text
        peer = _parse_address(peer_text)
        if not self.is_trusted(peer):
            return str(peer) if peer is not None else peer_text
        hops: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                hops.extend(value.decode("latin-1").split(","))
        hops = [hop.strip() for hop in hops if hop.strip()][-_MAX_HOPS:]
        for hop in reversed(hops):
            address = _parse_address(hop)
            if address is None:
                # What the outermost trusted proxy appended is an address; garbage here was
                # written by the client, so the proxy-side neighbour is the honest answer.
                break
            if not self.is_trusted(address):
                return str(address)
            peer = address
        return str(peer) if peer is not None else peer_text

"""The client address rate limits key on: X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from typing import Any

from atrium.platform.clientip import ClientIpResolver


def _scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    return {
        "client": (peer, 5000) if peer else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    resolve = ClientIpResolver([])
    assert resolve(_scope("203.0.113.9", "1.2.3.4")) == "203.0.113.9"
    assert resolve(_scope(None)) == "unknown"


def test_untrusted_peer_cannot_choose_its_address() -> None:
    resolve = ClientIpResolver(["10.0.0.1"])
    assert resolve(_scope("203.0.113.9", "1.2.3.4")) == "203.0.113.9"


def test_trusted_proxy_chain_is_walked_from_the_right() -> None:
    resolve = ClientIpResolver(["10.0.0.0/8", "192.168.1.1"])
    # client-written junk, the real client, then our two proxies
    scope = _scope("10.0.0.1", "6.6.6.6, 198.51.100.7", "192.168.1.1")
    assert resolve(scope) == "198.51.100.7"
    assert resolve(_scope("10.0.0.1", "198.51.100.7")) == "198.51.100.7"
    assert resolve(_scope("10.0.0.1")) == "10.0.0.1"  # no header: the proxy itself
    assert resolve(_scope("10.0.0.1", "10.1.1.1, 10.2.2.2")) == "10.1.1.1"  # all ours


def test_address_forms_and_garbage() -> None:
    resolve = ClientIpResolver(["127.0.0.1", "::1"])
    assert resolve(_scope("127.0.0.1", "[2001:db8::1]:443")) == "2001:db8::1"
    assert resolve(_scope("::1", "198.51.100.7:1234")) == "198.51.100.7"
    assert resolve(_scope("::ffff:127.0.0.1", "198.51.100.8")) == "198.51.100.8"
    # Garbage where the proxy's entry should be: never a client-chosen string.
    assert resolve(_scope("127.0.0.1", "1.1.1.1, not-an-ip")) == "127.0.0.1"
    assert resolve(_scope("127.0.0.1", ", ".join(["10.0.0.1"] * 1000))) == "10.0.0.1"

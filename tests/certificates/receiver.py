"""A real HTTP webhook receiver on loopback that can fail requests and go down for a while."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import orjson

from atrium.certificates.outbox import verify_signature


@dataclass
class Received:
    """One request as the receiver saw it."""

    event_id: int
    attempt: int
    body: bytes
    signature: str
    status: int
    at: float
    certificate_id: int
    active: bool
    payload: dict[str, object]


@dataclass
class Receiver:
    """``fail_first`` requests get a 500; :meth:`go_down` closes the port until :meth:`come_up`."""

    secret: bytes
    fail_first: int = 0
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.port}/hooks/certificates"

    async def start(self) -> None:
        """Listen (on the same port again after :meth:`go_down`)."""
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def go_down(self) -> None:
        """Stop listening: connections are refused."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def come_up(self) -> None:
        """Listen again."""
        await self.start()

    async def stop(self) -> None:
        """Shut down for good."""
        if self._server is not None:
            await self.go_down()

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.requests if r.status == 200]

    async def wait_for_events(self, event_ids: set[int], within: float = 60.0) -> None:
        """Until every one of ``event_ids`` was accepted at least once."""

        def done() -> bool:
            return event_ids <= {r.event_id for r in self.accepted()}

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(done)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = 500 if self.fail_first > 0 else 200
            self.fail_first = max(self.fail_first - 1, 0)
            payload = orjson.loads(body)
            self.requests.append(
                Received(
                    event_id=int(headers["x-atrium-event-id"]),
                    attempt=int(headers["x-atrium-delivery-attempt"]),
                    body=body,
                    signature=headers.get("x-atrium-signature", ""),
                    status=status,
                    at=time.monotonic(),
                    certificate_id=payload["certificate_id"],
                    active=payload["active"],
                    payload=payload,
                )
            )
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            async with self._changed:
                self._changed.notify_all()
        writer.close()

    def check_signatures(self) -> None:
        """Every request carried a valid signature of its exact body."""
        for request in self.requests:
            assert verify_signature(self.secret, request.body, request.signature), request

    def check_order(self) -> None:
        """Per certificate, no event arrived (even as a failed try) before its predecessor was
        accepted, and accepted events appear in event-id order."""
        accepted_ids: set[int] = set()
        by_certificate: dict[int, list[int]] = {}
        for request in self.requests:
            earlier = [
                e for e in by_certificate.get(request.certificate_id, []) if e < request.event_id
            ]
            assert all(e in accepted_ids for e in earlier), (request.event_id, earlier)
            if request.status == 200:
                accepted_ids.add(request.event_id)
            seen = by_certificate.setdefault(request.certificate_id, [])
            if request.event_id not in seen:
                seen.append(request.event_id)
        for events in by_certificate.values():
            assert events == sorted(events)

"""A stand-in management API on 127.0.0.1 that answers each queue GET as a test says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from topology.settings import BrokerSettings

Reply = Callable[[str], Awaitable[web.StreamResponse]]


def queue_body(ready=0, unacked=0, consumers=0, **extra: Any) -> dict[str, Any]:
    """Return a queue object shaped like RabbitMQ 3.10's, with ``extra`` fields merged in."""
    return {
        "name": "q",
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "consumers": consumers,
        **extra,
    }


@dataclass
class FakeManagement:
    """Records every request and answers ``/api/queues/{vhost}/{name}`` from ``bodies``."""

    bodies: dict[str, Any] = field(default_factory=dict)
    reply: Reply | None = None  # overrides ``bodies`` for every queue when set
    paths: list[str] = field(default_factory=list)
    peers: set[Any] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    def settings(self, vhost: str = "work") -> BrokerSettings:
        """Return broker settings whose management API is this fake."""
        return BrokerSettings(management_url=SecretStr(self.url)).with_vhost(vhost)

    async def hang(self, name: str) -> web.StreamResponse:
        """Answer nothing until the test ends."""
        await self.release.wait()
        return web.Response(status=504)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        self.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        name = request.match_info["name"]
        if self.reply is not None:
            return await self.reply(name)
        if name not in self.bodies:
            return web.json_response(
                {"error": "Object Not Found", "reason": "Not Found"}, status=404
            )
        return web.json_response(self.bodies[name], dumps=json.dumps)


@asynccontextmanager
async def fake_management() -> AsyncIterator[FakeManagement]:
    """Run a fake management API for the duration of the block."""
    fake = FakeManagement()
    app = web.Application()
    app.router.add_get("/api/queues/{vhost}/{name}", fake._handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = f"http://127.0.0.1:{server.port}"
    try:
        yield fake
    finally:
        fake.release.set()
        await server.close()

"""Fixtures for outbound calls: a real receiver on 127.0.0.1, a dial trip-wire and stub DNS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    """One request the receiver got."""

    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200, text="ok", headers={"X-Internal": "kept out"})


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1 that records every request and answers with ``reply``."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    reply: Reply = _ok
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """Return the receiver's base URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"


async def start_receiver(state: Receiver, **server_kwargs: Any) -> TestServer:
    """Start a server on 127.0.0.1 that records into ``state``, and set its port."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        state.seen.append(Seen(request.method, request.path_qs, request.headers, body))
        return await state.reply(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**server_kwargs)
    assert server.port is not None
    state.port = server.port
    return server


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """Yield a recording receiver; handlers waiting on ``release`` are let go at the end."""
    state = Receiver()
    server = await start_receiver(state)
    yield state
    state.release.set()
    await server.close()


@pytest.fixture
async def dials(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record every outbound TCP connect on the running loop (aiohttp dials via sock_connect)."""
    loop = asyncio.get_running_loop()
    real = loop.sock_connect
    calls: list[tuple[Any, ...]] = []

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        calls.append(tuple(address)[:2])
        await real(sock, address)

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    return calls


@dataclass
class StubDns:
    """Answers for chosen names, one list per lookup (the last repeats); others go to the OS."""

    answers: dict[str, list[list[str] | OSError]] = field(default_factory=dict)
    asked: list[tuple[str, int]] = field(default_factory=list)

    def answer(self, host: str, *lookups: list[str] | OSError) -> None:
        """Make successive lookups of ``host`` return these address lists (or raise)."""
        self.answers[host] = list(lookups)


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> StubDns:
    """Replace the running loop's getaddrinfo, the one resolution an outbound call makes."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    stub = StubDns()

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> list[Any]:
        stub.asked.append((host, kwargs.get("flags", 0)))
        if host not in stub.answers:
            return await real(host, port, **kwargs)
        lookups = stub.answers[host]
        outcome = lookups.pop(0) if len(lookups) > 1 else lookups[0]
        if isinstance(outcome, OSError):
            raise outcome
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in outcome
        ]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return stub

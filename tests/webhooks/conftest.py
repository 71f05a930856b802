"""Fixtures for outbound calls: stub DNS on the running loop."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest


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

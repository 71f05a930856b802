"""An aiohttp connector whose resolver answers only with addresses already checked and pinned."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from ssl import SSLContext

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from webhooks.outbound.addresses import AllowList, IPAddress, host_key


class PinnedResolver(AbstractResolver):
    """Resolve a host name to the one address pinned for it, and refuse every other name."""

    def __init__(self) -> None:
        self._pins: dict[str, tuple[IPAddress, int]] = {}

    @contextmanager
    def pinned(self, host: str, address: IPAddress) -> Iterator[None]:
        """Answer ``address`` for ``host`` while the block runs."""
        key = host_key(host)
        _, users = self._pins.get(key, (address, 0))
        # Concurrent calls to one name may pin different checked addresses; the latest
        # wins, which is safe because every pin passed the connector's one allow-list.
        self._pins[key] = (address, users + 1)
        try:
            yield
        finally:
            current, users = self._pins[key]
            if users == 1:
                del self._pins[key]
            else:
                self._pins[key] = (current, users - 1)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the pinned address of ``host``; raise OSError for a name nobody pinned."""
        pin = self._pins.get(host_key(host))
        if pin is None:
            raise OSError(f"{host} was not checked and pinned; refusing to resolve it")
        address = pin[0]
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
        ]

    async def close(self) -> None:
        """Forget every pin."""
        self._pins.clear()


class PinnedConnector(aiohttp.TCPConnector):
    """A TCP connector that dials only pinned addresses, bound to one allow-list."""

    def __init__(self, allow: AllowList, *, ssl: SSLContext | bool = True) -> None:
        self.allow = allow
        self.pins = PinnedResolver()
        # No DNS cache: the resolver is a dictionary look-up, and a cached answer would
        # outlive the pin it came from.
        super().__init__(resolver=self.pins, use_dns_cache=False, ssl=ssl)

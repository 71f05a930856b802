"""Helpers for tests that talk to the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from topology.management import ManagementClient
from topology.settings import BrokerSettings


class TestsManagementClient(ManagementClient):
    """The management client plus what only tests and benchmarks do: scratch virtual hosts, purges, cut connections, imported definitions."""

    __test__ = False

    async def connections(self, vhost: str) -> list[dict[str, Any]]:
        """Return the client connections open on ``vhost``."""
        listed: list[dict[str, Any]] = await self._request(
            "GET", f"/api/vhosts/{quote(vhost, safe='')}/connections"
        )
        return listed

    async def close_connection(self, name: str, *, reason: str) -> None:
        """Force-close the connection called ``name`` (as listed by ``connections``)."""
        path = f"/api/connections/{quote(name, safe='')}"
        await self._request("DELETE", path, headers={"X-Reason": reason})

    async def create_vhost(self, vhost: str, *, user: str = "guest") -> None:
        """Create ``vhost`` and give ``user`` full permissions on it."""
        await self._request("PUT", f"/api/vhosts/{quote(vhost, safe='')}", json={})
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        path = f"/api/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}"
        await self._request("PUT", path, json=perms)

    async def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost`` and everything in it."""
        await self._request("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")

    async def purge_queue(self, vhost: str, name: str) -> None:
        """Remove every ready message from the queue ``name`` of ``vhost``."""
        await self._request(
            "DELETE", f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}/contents"
        )

    async def import_definitions(self, vhost: str, definitions: dict[str, Any]) -> None:
        """Import RabbitMQ definitions into ``vhost``."""
        await self._request("POST", f"/api/definitions/{quote(vhost, safe='')}", json=definitions)


@asynccontextmanager
async def channel(
    settings: BrokerSettings, *, name: str = "taskq tests"
) -> AsyncIterator[AbstractChannel]:
    """Yield a channel on a plain (non-robust) connection to the settings' vhost."""
    connection = await aio_pika.connect(
        settings.amqp_url.get_secret_value(), client_properties={"connection_name": name}
    )
    async with connection:
        ch = await connection.channel()
        # One unacked delivery at a time, so next_message() never strands a second one.
        await ch.set_qos(prefetch_count=1)
        yield ch


async def depth(ch: AbstractChannel, queue: str) -> int:
    """Return how many ready messages ``queue`` holds right now (passive declare, no stats lag)."""
    declared = await ch.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def next_message(
    ch: AbstractChannel, queue: str, within: float = 10.0
) -> AbstractIncomingMessage:
    """Return the next message consumed from ``queue`` (unacked), waiting at most ``within`` seconds."""
    q = await ch.get_queue(queue, ensure=False)
    got: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    tag = await q.consume(got.put)
    try:
        async with asyncio.timeout(within):
            return await got.get()
    finally:
        await q.cancel(tag)


async def wait_for_connection(
    management: TestsManagementClient, vhost: str, name: str, besides: str = ""
) -> str:
    """Return the broker's name of the connection called ``name`` (other than ``besides``)."""
    async with asyncio.timeout(15):
        while True:  # the connection list has no event to await
            for conn in await management.connections(vhost):
                named = conn.get("client_properties", {}).get("connection_name") == name
                if named and conn["name"] != besides:
                    return str(conn["name"])
            await asyncio.sleep(0.2)

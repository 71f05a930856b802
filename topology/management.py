"""A small client for the RabbitMQ management HTTP API (aiohttp, one reused session)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from topology.closing import AsyncClosing
from topology.errors import ManagementApiError
from topology.server import BrokerServer
from topology.settings import BrokerSettings
from topology.tls import broker_context, tls_failure

_FIGURES = (
    "name,messages_ready,messages_unacknowledged,consumers,head_message_timestamp,message_stats"
)


class ManagementClient(AsyncClosing):
    """Reads and writes broker state through the management API over one reused HTTP session."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        # Any node of a cluster answers for all of them; the first in the list is asked first.
        self._bases = settings.management_bases
        user, password = settings.management_credentials
        self._headers = {"Authorization": aiohttp.encode_basic_auth(user, password)}
        self._timeout = aiohttp.ClientTimeout(total=settings.management_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session; a later call opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def server(self) -> BrokerServer:
        """Return the broker's RabbitMQ version and enabled feature flags (``None`` if this user may not list them)."""
        overview = await self._request("GET", "/api/overview")
        version = overview.get("rabbitmq_version") if isinstance(overview, dict) else None
        if not isinstance(version, str):
            raise ManagementApiError("GET /api/overview: no rabbitmq_version in the answer")
        try:
            listed = await self._request("GET", "/api/feature-flags")
        except ManagementApiError as exc:
            if exc.status not in (401, 403):
                raise
            return BrokerServer(version, None)  # listing flags needs the administrator tag
        flags = [f for f in listed if isinstance(f, dict)] if isinstance(listed, list) else []
        return BrokerServer(
            version, frozenset(str(f.get("name")) for f in flags if f.get("state") == "enabled")
        )

    async def listing(
        self, vhost: str, kind: Literal["exchanges", "queues", "bindings"]
    ) -> list[dict[str, Any]]:
        """Return every exchange, queue or binding of ``vhost`` (queues without message rates)."""
        query = "?disable_stats=true&enable_queue_totals=true" if kind == "queues" else ""
        return await self._objects(f"/api/{kind}/{_q(vhost)}{query}")

    async def queue(self, vhost: str, name: str) -> dict[str, Any]:
        """Return one queue with its message counts, consumers and rates."""
        path = f"/api/queues/{_q(vhost)}/{_q(name)}"
        data = await self._request("GET", path)
        if not isinstance(data, dict):
            raise ManagementApiError(f"GET {path}: expected a JSON object")
        return data

    async def queue_figures(self, vhost: str) -> list[dict[str, Any]]:
        """Return every queue of ``vhost`` with its counts, consumers, head age and rates, in one call."""
        return await self._objects(f"/api/queues/{_q(vhost)}?columns={_FIGURES}")

    async def _objects(self, path: str) -> list[dict[str, Any]]:
        data = await self._request("GET", path)
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise ManagementApiError(f"GET {path}: expected a JSON list of objects")
        return data

    async def delete(self, vhost: str, kind: Literal["queue", "exchange"], name: str) -> None:
        """Delete the queue or exchange ``name`` of ``vhost``."""
        await self._request("DELETE", f"/api/{kind}s/{_q(vhost)}/{_q(name)}")

    async def delete_binding(
        self, vhost: str, source: str, destination: str, destination_type: str, properties_key: str
    ) -> None:
        """Delete one binding, named by its ends and the ``properties_key`` the API listed."""
        kind = "q" if destination_type == "queue" else "e"
        path = f"/api/bindings/{_q(vhost)}/e/{_q(source)}/{kind}/{_q(destination)}/{_q(properties_key)}"
        await self._request("DELETE", path)

    async def _request(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        if self._session is None:
            connector = None
            if self._bases[0].startswith("https://"):
                # The broker's CA and client certificate serve its management API too.
                context = await asyncio.to_thread(broker_context, self._settings)
                connector = aiohttp.TCPConnector(ssl=context)
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout, connector=connector
            )
        for turn in range(len(self._bases)):
            base = self._bases[0]
            try:
                async with self._session.request(
                    method, base + path, json=json, headers=headers
                ) as response:
                    if response.status >= 400:
                        body = (await response.text())[:300]
                        raise ManagementApiError(
                            f"{method} {path}: HTTP {response.status} {body}",
                            status=response.status,
                        )
                    if response.status == 204 or response.content_length == 0:
                        return None
                    return await response.json(content_type=None)
            except ManagementApiError:
                raise
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                # A node that took no request (refused, or a read that timed out) hands it to the
                # next node, which is then asked first; a write that may have landed is not resent.
                unsent = isinstance(exc, aiohttp.ClientConnectorError) or (
                    method == "GET" and isinstance(exc, TimeoutError)
                )
                if unsent and turn < len(self._bases) - 1:
                    self._bases.append(self._bases.pop(0))
                    continue
                hint = (
                    "check TASKQ_BROKER_TLS_* against the management API's certificate and CA"
                    if tls_failure(exc)
                    else "is the management plugin on? (rabbitmq-plugins enable rabbitmq_management)"
                )
                raise ManagementApiError(
                    f"{method} {base}{path} failed: {str(exc) or type(exc).__name__}; {hint}"
                ) from exc
        raise AssertionError("unreachable: the last node's failure is raised")


def message_rate(queue: Mapping[str, Any], name: str) -> float:
    """Return a queue's rate ``name`` (``publish_details``, ``ack_details``) per second as the API lists it, else 0."""
    stats = queue.get("message_stats")
    details = stats.get(name) if isinstance(stats, Mapping) else None
    rate = details.get("rate") if isinstance(details, Mapping) else None
    return float(rate) if isinstance(rate, int | float) else 0.0


def _q(part: str) -> str:
    return quote(part, safe="")

"""Serve ``taskq.v1.Jobs`` with gRPC health checking and server reflection on uvicorn's HTTP/2, over TLS when the API has it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
import zttp
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # bound at run time
from grpc_reflection.v1alpha import reflection, reflection_pb2
from loguru import logger
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.zttp_h2_impl import ZttpH2Protocol

from producers.api.app import Services
from producers.grpc_api.calls import GrpcApp
from producers.grpc_api.service import SERVICE, GrpcMetrics, JobsService
from producers.grpc_api.v1 import jobs_pb2
from topology.errors import SettingsError, TaskqError
from topology.settings import ApiSettings, GrpcSettings
from topology.tls import api_context

Ready = Callable[[], Awaitable[None]]
HEALTH_EVERY_S = 2.0  # how often the health status follows the broker and the store
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# zttp ends a connection that opened 4,096 streams, or saw 256 of them reset, with a fatal
# GOAWAY that fails the calls in flight. A connection is retired well before either: a
# graceful GOAWAY, its calls answered, and clients move to a new one, replaying the calls
# that crossed the GOAWAY (128 at most: zttp's limit of concurrent streams).
STREAM_BUDGET = 4096 - 2 * 128
RESET_BUDGET = 128
LINGER_S = 1.0  # how long a retired connection waits for its client to close it
IDLE_S = 300  # an idle channel is kept: gRPC clients hold one for their whole life


class GrpcHttp2(ZttpH2Protocol):
    """uvicorn's HTTP/2 connection, retired gracefully before zttp's budgets of streams run out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._opened = self._resets = self._highest = 0
        self._last: int | None = None  # the last stream served, once the GOAWAY is sent
        self._closing: asyncio.TimerHandle | None = None

    def handle_request(self, event: zttp.Request) -> None:
        """Serve a call, unless it came after the GOAWAY (its client sends it again elsewhere)."""
        if self._last is not None and event.stream_id > self._last:
            return
        self._opened += 1
        self._highest = event.stream_id
        super().handle_request(event)
        if self._opened >= STREAM_BUDGET:
            self._retire()

    def handle_rst_stream(self, event: zttp.RstStream) -> None:
        """Forget a call its client cancelled; retire the connection after many."""
        super().handle_rst_stream(event)
        self._resets += 1
        if self._resets >= RESET_BUDGET:
            self._retire()

    def shutdown(self) -> None:
        """Stop taking calls when the server stops, answering those in flight."""
        self._retire()

    def _retire(self) -> None:
        """Send a GOAWAY naming the last call taken, and close once every call taken is answered."""
        if self.transport.is_closing():
            return
        if self._last is None:
            self._last = self._highest
            self.conn.close(0, self._last)
            self.flush()
        self.shutdown_requested = True
        if not self.cycles:
            self._close_connection()

    def _close_connection(self) -> None:
        if self._last is None:  # idle for IDLE_S: a GOAWAY like any other
            super()._close_connection()
        elif not self.transport.is_closing() and self._closing is None:
            # Not at once: calls the client sent across the GOAWAY would meet a closed
            # socket, whose reset can drop the last answers still unread on its side. The
            # client closes first once it read them; this is for a client that does not.
            self.flush()
            self._closing = self.loop.call_later(LINGER_S, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection, and the close it was waiting for."""
        if self._closing is not None:
            self._closing.cancel()
        super().connection_lost(exc)


@dataclass(slots=True)
class GrpcServer:
    """A running gRPC job API: the service, its health status kept current, and reflection."""

    _server: uvicorn.Server
    _health: health_aio.HealthServicer
    port: int  # the port bound (the one asked for, or the free one given for 0)
    _follower: asyncio.Task[None] | None = None

    def follow(self, ready: Ready) -> None:
        """Keep the health status SERVING while ``ready()`` passes, NOT_SERVING while it raises."""
        self._follower = asyncio.create_task(self._follow(ready))

    async def _follow(self, ready: Ready) -> None:
        while True:
            try:
                await ready()
                status = _SERVING
            except TaskqError as exc:
                logger.warning("gRPC health: not serving: {}", exc)
                status = _NOT_SERVING
            for name in ("", SERVICE):
                await self._health.set(name, status)
            await asyncio.sleep(HEALTH_EVERY_S)

    async def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let those in flight finish within ``grace`` seconds, then stop."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._health.enter_graceful_shutdown()
        await stop_calls(self._server, grace)


async def start_grpc(
    services: Services,
    api: ApiSettings,
    settings: GrpcSettings,
    *,
    registry: CollectorRegistry | None = None,
    port: int | None = None,
) -> GrpcServer:
    """Start serving the job API on ``settings``' address (``port`` instead, if given; 0: a free one)."""
    # A batch may be as large as a batch body over HTTP; a single job is checked on its own.
    app = GrpcApp(max_message_bytes=api.max_batch_body_bytes)
    app.add(
        jobs_pb2.DESCRIPTOR.services_by_name["Jobs"],
        JobsService(services, api, GrpcMetrics(registry)),
    )
    health = health_aio.HealthServicer()
    app.add(health_pb2.DESCRIPTOR.services_by_name["Health"], health)
    names = [
        SERVICE,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    app.add(
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
        reflection.aio.ReflectionServicer(names),  # type: ignore[attr-defined]  # bound at run time
    )
    host = settings.grpc_host
    context = api_context(api)  # a bad certificate setting fails here, before serving
    server, bound = await serve_calls(
        app, host, settings.grpc_port if port is None else port, context
    )
    for name in ("", SERVICE):
        await health.set(name, _SERVING)
    logger.info("gRPC job API on {}:{} ({})", host, bound, "TLS" if context else "plain")
    return GrpcServer(server, health, bound)


async def serve_calls(
    app: GrpcApp, host: str, port: int, context: ssl.SSLContext | None = None
) -> tuple[uvicorn.Server, int]:
    """Serve ``app``'s calls on uvicorn's HTTP/2 at ``host:port`` (0: a free port); return the server and the port bound."""
    if context is not None:
        context.set_alpn_protocols(["h2"])
    config = uvicorn.Config(
        app,
        http=GrpcHttp2,
        lifespan="off",
        timeout_keep_alive=IDLE_S,
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        ssl_context_factory=None if context is None else lambda _config, _default: context,
    )
    # IPPROTO_TCP named: asyncio turns Nagle off only on sockets that name it (uvloop on all),
    # and with Nagle on, a call's small frames wait out the client's delayed ACK (40 ms).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise SettingsError(
            f"the gRPC job API cannot listen on {host}:{port}: {exc}; choose TASKQ_GRPC_PORT"
        ) from exc
    # Started as serve() would start it, minus serve()'s capture of SIGINT and SIGTERM: the
    # process beside it (the HTTP API, or taskctl serve --grpc) owns the signals.
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[listener])
    return server, listener.getsockname()[1]


async def stop_calls(server: uvicorn.Server, grace: float) -> None:
    """Stop taking calls, answer those in flight within ``grace`` seconds, then close every connection."""
    server.config.timeout_graceful_shutdown = max(1, round(grace))
    await server.shutdown()
    for connection in list(server.server_state.connections):
        connection.transport.close()  # one still lingering after its GOAWAY, or past the grace

"""Serve ``taskq.v1.Jobs`` with gRPC health checking and server reflection, over TLS when the API has it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # bound at run time
from grpc_reflection.v1alpha import reflection
from loguru import logger
from prometheus_client import CollectorRegistry

from producers.api.app import Services
from producers.grpc_api.service import SERVICE, GrpcMetrics, JobsService
from producers.grpc_api.v1 import jobs_pb2_grpc
from topology.errors import SettingsError, TaskqError
from topology.settings import ApiSettings, GrpcSettings

Ready = Callable[[], Awaitable[None]]
HEALTH_EVERY_S = 2.0  # how often the health status follows the broker and the store
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(slots=True)
class GrpcServer:
    """A running gRPC job API: the service, its health status kept current, and reflection."""

    _server: grpc.aio.Server
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
        await self._server.stop(grace)


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
    limit = api.max_batch_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a port taken by another server is an error, not shared
        ]
    )
    jobs_pb2_grpc.add_JobsServicer_to_server(
        JobsService(services, api, GrpcMetrics(registry)), server
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{settings.grpc_host}:{settings.grpc_port if port is None else port}"
    try:
        credentials = _credentials(api)
        bound = (
            server.add_insecure_port(address)
            if credentials is None
            else server.add_secure_port(address, credentials)
        )
    except RuntimeError as exc:  # grpc's word for a port it could not bind
        raise SettingsError(
            f"the gRPC job API cannot listen on {address}: {exc}; choose TASKQ_GRPC_PORT"
        ) from exc
    await server.start()
    for name in ("", SERVICE):
        await health.set(name, _SERVING)
    logger.info("gRPC job API on {} ({})", address, "TLS" if api.api_tls_cert_file else "plain")
    return GrpcServer(server, health, bound)


def _credentials(api: ApiSettings) -> grpc.ServerCredentials | None:
    """Return the TLS credentials of the API's files (mutual TLS with a client CA), or ``None``."""
    if not api.api_tls_cert_file:
        return None
    try:
        chain = Path(api.api_tls_cert_file).read_bytes()
        key = Path(api.api_tls_key_file).read_bytes() if api.api_tls_key_file else chain
        roots = (
            Path(api.api_tls_client_ca_file).read_bytes() if api.api_tls_client_ca_file else None
        )
    except OSError as exc:
        raise SettingsError(f"the API's TLS files cannot be read for gRPC: {exc}") from exc
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=roots, require_client_auth=roots is not None
    )

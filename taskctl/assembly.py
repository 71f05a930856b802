"""The one assembly of every process taskq runs: settings → backends → publisher → submitter → the API or a worker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import signal
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from loguru import logger
from prometheus_client import REGISTRY, CollectorRegistry

from consumers.handlers import HandlerRegistry, default_registry
from consumers.metrics import WorkerMetrics
from consumers.metrics_server import serve_metrics
from consumers.worker import Deps, Worker
from jobstore.retention import RetentionMetrics, RetentionSweep
from producers.auth.authenticator import open_authenticator
from producers.backends import confirmed, open_producer
from producers.leadership import Leadership
from producers.metrics import SchedulerMetrics
from producers.scheduler import SYSTEM_CLOCK, Clock, Scheduler
from telemetry import tracing
from topology import routing
from topology.compiled import CompiledTopology
from topology.errors import BrokerUnavailableError, SettingsError
from topology.settings import Settings
from webhooks.callbacks import CallbackDelivery, registration_check

if TYPE_CHECKING:
    from fastapi import FastAPI

    from jobstore.model import CredentialStore
    from producers.api.app import Services
    from producers.grpc_api.server import GrpcServer

# The API's own modules (FastAPI, uvicorn, the routes) are imported by the functions that
# build the API: a worker process starts without them, and they were a third of its start.


async def api_services(settings: Settings, registry: CollectorRegistry | None = None) -> Services:
    """Connect to the broker, open the stores, start the repair and retention sweeps; metrics on ``registry``."""
    from producers.api.app import Services
    from producers.watchers import EventHub

    async with contextlib.AsyncExitStack() as stack:  # unwound only if a step fails
        producer = await open_producer(settings, confirmed("taskq api"), registry)
        stack.push_async_callback(producer.close)
        backends, publisher, submitter = producer.backends, producer.publisher, producer.submitter
        submitter.callback_check = registration_check(settings.callbacks)
        authenticator = open_authenticator(submitter.store, settings.auth)
        # Jobs whose submitter stopped between storing and the confirm are published again here.
        in_background(stack, submitter.keep_repairing())
        if settings.retention.retention_sweep_interval > 0:
            sweep = RetentionSweep(
                backends.store,
                backends.blobs,
                backends.topology.kept_for,
                grace=settings.retention.orphan_blob_grace,
                metrics=RetentionMetrics(registry),
            )
            in_background(stack, sweep.keep_sweeping(settings.retention.retention_sweep_interval))
        hub = EventHub()
        await hub.attach(publisher.connection, submitter.topology)
        close = stack.pop_all().aclose

    # Everything built so far lives as long as the process: out of the collector's sight, the
    # full collections that many requests' garbage triggers stop rescanning it (about 120 us
    # of CPU per POST /jobs, bench/http_ingest.py).
    gc.freeze()

    async def ready() -> None:
        if not publisher.connected:
            raise BrokerUnavailableError("the connection to RabbitMQ is down (reconnecting)")

    return Services(submitter, hub, ready, close, publisher, authenticator)


def in_background(stack: contextlib.AsyncExitStack[Any], work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` as a task of its own until ``stack`` unwinds, which cancels it."""
    stack.push_async_callback(_cancelled, asyncio.create_task(work))


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def api_app(
    settings: Settings,
    services: Services | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Return the whole API (jobs, ``/admin/dlq``, ``/webhooks/{source}``, ``/console``); webhook secrets come from ``environ``."""
    from producers.api.app import create_app
    from taskctl import admin_routes
    from taskctl.console import console_door
    from webhooks.receiver import webhook_router

    if services is not None:
        services.submitter.callback_check = registration_check(settings.callbacks)
    routers = [admin_routes.router, webhook_router(settings.auth, environ)]
    # The API's metrics and its submitter's (and the gRPC door's beside it), served at /metrics.
    registry = registry or CollectorRegistry()
    return create_app(
        services or (lambda: api_services(settings, registry)),
        settings.api,
        registry=registry,
        routers=routers,
        own_doors=[console_door(settings.broker, settings.autoscaler)],
    )


def serve_api(settings: Settings) -> int:
    """Serve the API (and the gRPC job API beside it when ``TASKQ_GRPC`` says so) until SIGINT or SIGTERM; return 0."""
    import uvicorn

    from producers.api.guards import server_config
    from taskctl.context import run

    tracing.configure_tracing("taskq-api")  # only when OTEL_* variables ask for it
    if not settings.grpc.grpc:
        uvicorn.Server(server_config(api_app(settings), settings.api)).run()
        return 0

    async def both() -> None:
        registry = CollectorRegistry()
        services = await api_services(settings, registry)
        await with_grpc(services, settings, registry)
        app = api_app(settings, services, registry=registry)
        await uvicorn.Server(server_config(app, settings.api)).serve()

    run(both())
    return 0


async def with_grpc(
    services: Services,
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    port: int | None = None,
) -> GrpcServer:
    """Start the gRPC job API on ``services`` (on ``port`` if given); closing them stops it first, its calls drained."""
    from producers.grpc_api.server import start_grpc

    server = await start_grpc(services, settings.api, settings.grpc, registry=registry, port=port)
    if services.ready is not None:
        server.follow(services.ready)
    close = services.close

    async def stop_then_close() -> None:
        await server.stop()
        if close is not None:
            await close()

    services.close = stop_then_close
    return server


async def serve_grpc(settings: Settings) -> int:
    """Serve only the gRPC job API, on ``TASKQ_GRPC_HOST:TASKQ_GRPC_PORT``, until SIGINT or SIGTERM; return 0."""
    tracing.configure_tracing("taskq-grpc")  # only when OTEL_* variables ask for it
    services = await api_services(settings, REGISTRY)
    try:
        await with_grpc(services, settings, REGISTRY)
        await signalled().wait()
    finally:
        if services.close is not None:
            await services.close()
    return 0


def signalled() -> asyncio.Event:
    """Return an event that the process's first SIGTERM or SIGINT sets."""
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    return stopping


def handlers(settings: Settings, callbacks: CallbackDelivery) -> HandlerRegistry:
    """Return the handlers of the modules ``TASKQ_HANDLERS`` names, plus the built-in callback delivery."""
    for name in (m.strip() for m in settings.worker.handlers.split(",") if m.strip()):
        try:
            importlib.import_module(name)  # its @handler calls fill the default registry
        except ImportError as exc:
            raise SettingsError(f"TASKQ_HANDLERS: cannot import {name!r}: {exc}") from exc
    registry = default_registry.copy()
    callbacks.register(registry)
    return registry


def handled_groups(topology: CompiledTopology, settings: Settings) -> list[str]:
    """Return the groups that get workers: those whose job types some handler takes."""
    job_types = handlers(settings, CallbackDelivery(settings.callbacks)).job_types
    return [
        group.name
        for group in topology.groups
        if any(routing.overlap(h, p) is not None for h in job_types for p in group.spec.jobs)
    ]


async def run_scheduler(settings: Settings, clock: Clock = SYSTEM_CLOCK) -> int:
    """Run a scheduler replica until SIGTERM or SIGINT (it fires while it leads); return 0."""
    async with contextlib.AsyncExitStack() as stack:
        producer = await open_producer(settings, confirmed("taskq scheduler (publish)"), REGISTRY)
        stack.push_async_callback(producer.close)
        submitter = producer.submitter
        queue = submitter.topology.scheduler_queue
        if not queue:
            logger.info("the topology declares no schedules: the scheduler has nothing to fire")
            return 0
        # An occurrence stored by a replica that died before its confirm is published again
        # and its key completed here too, well within the key's lease: the replica that leads
        # next replays it, without an API running, instead of taking the key over when the
        # lease lapses and firing the occurrence a second time.
        in_background(stack, submitter.keep_repairing())
        lease = settings.scheduler.scheduler_lease
        leadership = Leadership(settings.broker, queue, lease=lease)
        await leadership.start()
        stack.push_async_callback(leadership.stop)
        port = settings.scheduler.scheduler_metrics_port
        await _serve_metrics(stack, port, submitter.store, settings)
        stopping = signalled()
        names = ", ".join(name for name, _ in submitter.topology.schedules)
        logger.info("scheduler {} for {} (lease {:g}s)", leadership.name, names, lease)
        scheduler = Scheduler(
            submitter, leadership, clock=clock, metrics=SchedulerMetrics(REGISTRY)
        )
        await scheduler.run(stopping)
    return 0


async def _serve_metrics(
    stack: contextlib.AsyncExitStack[bool | None],
    port: int,
    store: CredentialStore,
    settings: Settings,
) -> None:
    """Serve the process registry's ``/metrics`` on ``port`` until ``stack`` closes (0: not)."""
    if port:
        # Every interface (a pod's address), so a credential with metrics:read is needed.
        authenticator = open_authenticator(store, settings.auth)
        server = await serve_metrics(authenticator, host="", port=port, registry=REGISTRY)
        stack.push_async_callback(server.cleanup)


async def run_worker(group_name: str, settings: Settings) -> int:
    """Run ``group_name``'s worker until SIGTERM or SIGINT; return 0 after a clean drain."""
    tracing.configure_tracing(f"taskq-worker-{group_name}")  # only when OTEL_* variables ask
    callbacks = CallbackDelivery(settings.callbacks)
    registry = handlers(settings, callbacks)
    # One worker a process: its metrics go on the process-wide registry, which prometheus_client
    # fills with process and platform collectors.
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(callbacks.close)
        connect = confirmed(f"taskq worker {group_name} (publish)")
        producer = await open_producer(settings, connect, REGISTRY)
        stack.push_async_callback(producer.close)
        backends, publisher, submitter = producer.backends, producer.publisher, producer.submitter
        group = backends.topology.group(group_name)
        await _serve_metrics(stack, settings.worker.worker_metrics_port, submitter.store, settings)
        deps = Deps(
            backends.topology,
            group,
            registry,
            backends.store,
            backends.blobs,
            publisher,
            settings.worker,
            submitter,
            WorkerMetrics(REGISTRY),
            backends.sealer,
        )
        worker = Worker(deps)
        stopping = signalled()
        await worker.start(settings.broker)
        gc.freeze()  # as the API's: a full collection stops rescanning what lives as long as it
        logger.info("worker for group {} consuming {}", group_name, ", ".join(group.queue_names))
        await stopping.wait()
        logger.info("worker for group {} draining (grace {}s)", group_name, settings.worker.grace)
        clean = await worker.stop()
    return 0 if clean else 1


async def run_stream(name: str, consumer: str, settings: Settings) -> int:
    """Run the stream source ``name`` as ``consumer`` of its group until SIGTERM or SIGINT; return 0."""
    from producers.streams.source import StreamMetrics, StreamSource, open_redis

    tracing.configure_tracing(f"taskq-stream-{name}")  # only when OTEL_* variables ask
    async with contextlib.AsyncExitStack() as stack:
        producer = await open_producer(settings, confirmed(f"taskq stream {name}"), REGISTRY)
        stack.push_async_callback(producer.close)
        spec = producer.backends.topology.stream(name)
        redis = open_redis(settings.streams)
        stack.push_async_callback(redis.aclose)
        # Its own keyed jobs left unconfirmed by a crash are published again and their keys
        # completed here too, so the entries read again replay them without an API running.
        in_background(stack, producer.submitter.keep_repairing())
        source = StreamSource(
            name,
            spec,
            consumer,
            redis,
            producer.submitter,
            producer.publisher,
            settings.streams,
            StreamMetrics(REGISTRY),
        )
        port = settings.streams.stream_metrics_port
        await _serve_metrics(stack, port, producer.submitter.store, settings)
        await source.ensure_group()
        await source.run(signalled())
        logger.info("stream source {} stopped", name)
    return 0

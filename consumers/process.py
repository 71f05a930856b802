"""Run one consumer group's worker as a process: connect, consume, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
from collections.abc import Coroutine, Mapping
from typing import Any

from loguru import logger

from consumers.handlers import HandlerRegistry, default_registry
from consumers.metrics_server import serve_metrics
from consumers.settings import WorkerSettings
from consumers.worker import Deps, Worker
from producers.auth.authenticator import open_authenticator
from producers.auth.settings import AuthSettings
from producers.backends import open_backends
from producers.publisher import ConfirmedPublisher
from producers.submit import Submitter
from telemetry import tracing
from topology import routing
from topology.broker import connect
from topology.errors import SettingsError
from topology.model import CompiledTopology
from topology.settings import load_settings


def load_handlers(modules: str, registry: HandlerRegistry = default_registry) -> HandlerRegistry:
    """Import the comma-separated handler modules (their ``@handler`` calls fill ``registry``).

    Raises:
        SettingsError: a module cannot be imported; the message names TASKQ_HANDLERS.
    """
    for name in (m.strip() for m in modules.split(",") if m.strip()):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SettingsError(f"TASKQ_HANDLERS: cannot import {name!r}: {exc}") from exc
    return registry


def groups_with_handlers(topology: CompiledTopology, registry: HandlerRegistry) -> list[str]:
    """Return the groups some registered handler takes job types of."""
    return [
        group.name
        for group in topology.groups
        if any(
            routing.overlap(h, p) is not None for h in registry.job_types for p in group.spec.jobs
        )
    ]


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` to completion on uvloop where it is installed (the faster loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # Windows, or an install without it: asyncio's own loop works too
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def run_worker(group_name: str, environ: Mapping[str, str] | None = None) -> int:
    """Run ``group_name``'s worker until SIGTERM or SIGINT; return 0 after a clean drain."""
    env = os.environ if environ is None else environ
    settings = load_settings(WorkerSettings, env)
    tracing.configure_tracing(f"taskq-worker-{group_name}")  # only when OTEL_* variables ask
    registry = load_handlers(settings.handlers)
    backends = await open_backends(env)
    try:
        group = backends.topology.group(group_name)
    except KeyError as exc:
        await backends.close()
        known = ", ".join(g.name for g in backends.topology.groups)
        raise SettingsError(f"no group {group_name!r} in the topology; groups: {known}") from exc
    publisher = await ConfirmedPublisher.connect(
        backends.broker,
        backends.topology,
        backends.publisher,
        name=f"taskq worker {group_name} (publish)",
    )
    connection = await connect(backends.broker, name=f"taskq worker {group_name}")
    submitter = Submitter(
        backends.topology, publisher, backends.store, backends.blobs, backends.submit
    )
    deps = Deps(
        backends.topology,
        group,
        registry,
        backends.store,
        backends.blobs,
        publisher,
        settings,
        submitter,
    )
    worker = Worker(deps)
    metrics = None
    if settings.worker_metrics_port:
        # The default registry: the worker's, breaker and publish metrics all live there. Every
        # interface (a pod's address), so a credential with metrics:read is needed.
        authenticator = open_authenticator(backends.store, load_settings(AuthSettings, env))
        metrics = await serve_metrics(authenticator, host="", port=settings.worker_metrics_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await worker.start(connection)
        logger.info("worker for group {} consuming {}", group_name, ", ".join(group.queue_names))
        await stopping.wait()
        logger.info("worker for group {} draining (grace {}s)", group_name, settings.grace)
        clean = await worker.stop()
    finally:
        if metrics is not None:
            await metrics.cleanup()
        await connection.close()
        await publisher.close()
        await backends.close()
    return 0 if clean else 1

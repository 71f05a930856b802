"""Fixtures for the worker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from consumers.handlers import HandlerRegistry
from consumers.metrics import WorkerMetrics
from consumers.worker import Deps, Worker
from producers.metrics import ProducerMetrics
from producers.publisher import ConfirmedPublisher
from producers.submit import Submitter
from tests.consumers.rig import TOPOLOGY, Rig
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.store import InMemoryJobStore
from topology.apply import apply_topology
from topology.broker import connect
from topology.settings import WorkerSettings


@pytest.fixture
async def rig(vhost) -> AsyncIterator[Rig]:
    await apply_topology(TOPOLOGY, vhost)
    store = InMemoryJobStore()
    blobs = InMemoryBlobStore()
    registry = HandlerRegistry()
    runs: list[str] = []
    metrics = WorkerMetrics()  # the submitter's and the publisher's go on its registry too
    produced = ProducerMetrics(metrics.registry)
    publisher = await ConfirmedPublisher.connect(vhost, TOPOLOGY, metrics=produced)
    connection = await connect(vhost, name="test worker")
    deps = Deps(
        TOPOLOGY,
        TOPOLOGY.group("mail"),
        registry,
        store,
        blobs,
        publisher,
        WorkerSettings(grace=5, poison_deliveries=3, breaker_threshold=2, breaker_cooldown=1),
        metrics=metrics,
    )
    worker = Worker(deps)
    await worker.start(connection)
    try:
        yield Rig(
            Submitter(TOPOLOGY, publisher, store, blobs, metrics=produced),
            store,
            registry,
            publisher,
            worker,
            vhost,
            runs,
            metrics,
        )
    finally:
        await worker.stop(grace=2)
        await connection.close()
        await publisher.close()

"""A worker wired to the real broker with in-memory stores, for the worker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from consumers.handlers import HandlerRegistry
from consumers.metrics import WorkerMetrics
from consumers.worker import Deps, Worker
from jobstore.model import JobStatus
from producers.metrics import ProducerMetrics
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.store import InMemoryJobStore
from tests.helpers import compiled, eventually
from topology.apply import apply_topology
from topology.compiled import CompiledTopology
from topology.settings import BrokerSettings, WorkerSettings

TOPOLOGY = compiled(
    """
    delays: {resolution: 250ms, longest: 1m}
    groups:
      mail:
        jobs: ["mail.#"]
        timeout: 2s
        retry: {max_attempts: 3, base: 250ms, factor: 2, max: 1s, jitter: none}
    """
)


@dataclass
class Rig:
    submitter: Submitter
    store: InMemoryJobStore
    registry: HandlerRegistry
    publisher: ConfirmedPublisher
    worker: Worker
    settings: object
    runs: list[str]
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)  # the worker's

    async def submit(self, job_type: str, payload: object = None, **fields) -> str:
        done = await self.submitter.submit(JobRequest(type=job_type, payload=payload, **fields))
        return done.job_id

    async def status(self, job_id: str) -> JobStatus | None:
        job = await self.store.get_job(job_id)
        return None if job is None else job.status

    async def until(self, job_id: str, status: JobStatus, within: float = 15) -> None:
        async def reached() -> bool:
            return await self.status(job_id) is status

        await eventually(reached, within=within, every=0.05)


@asynccontextmanager
async def started(
    vhost: BrokerSettings,
    topology: CompiledTopology = TOPOLOGY,
    worker_broker: BrokerSettings | None = None,
) -> AsyncIterator[Rig]:
    """Apply ``topology`` (its group ``mail``) to ``vhost`` and run a worker for it (on ``worker_broker`` if given), in-memory stores."""
    await apply_topology(topology, vhost)
    store = InMemoryJobStore()
    blobs = InMemoryBlobStore()
    registry = HandlerRegistry()
    runs: list[str] = []
    metrics = WorkerMetrics()  # the submitter's and the publisher's go on its registry too
    produced = ProducerMetrics(metrics.registry)
    publisher = await ConfirmedPublisher.connect(vhost, topology, metrics=produced)
    deps = Deps(
        topology,
        topology.group("mail"),
        registry,
        store,
        blobs,
        publisher,
        WorkerSettings(grace=5, poison_deliveries=3, breaker_threshold=2, breaker_cooldown=1),
        metrics=metrics,
    )
    worker = Worker(deps)
    await worker.start(worker_broker or vhost)
    try:
        yield Rig(
            Submitter(topology, publisher, store, blobs, metrics=produced),
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
        await publisher.close()

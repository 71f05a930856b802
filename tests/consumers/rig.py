"""A worker wired to the real broker with in-memory stores, for the worker tests."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from consumers.handlers import HandlerRegistry
from consumers.metrics import WorkerMetrics
from consumers.worker import Worker
from jobstore.model import JobStatus
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from tests.fakes.store import InMemoryJobStore
from tests.helpers import eventually
from topology.compiled import compile_topology
from topology.loader import parse_topology

TOPOLOGY = compile_topology(
    parse_topology(
        textwrap.dedent(
            """
            delays: {resolution: 250ms, longest: 1m}
            groups:
              mail:
                jobs: ["mail.#"]
                timeout: 2s
                retry: {max_attempts: 3, base: 250ms, factor: 2, max: 1s, jitter: none}
            """
        )
    )
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

"""``GroupCommitStore``: concurrent job inserts share one transaction, so the store is no bottleneck."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobstore.coalesce import Coalescer
from jobstore.credentials import ApiKeyRecord
from jobstore.model import (
    BreakerRecord,
    Claim,
    Execution,
    JobPage,
    JobRecord,
    JobStatus,
    JobStore,
    NewJob,
    RunFinish,
    RunStart,
    RunStarted,
)


class GroupCommitStore:
    """Wraps a ``JobStore``: ``create_job`` calls made while a commit runs join the next one.

    Under load, N concurrent submissions cost one transaction instead of N, and an idle
    system commits each job at once (a batch of one): nothing waits for a timer.
    """

    def __init__(self, inner: JobStore, *, max_batch: int = 256) -> None:
        self._inner = inner
        self._commits: Coalescer[NewJob, Claim] = Coalescer(inner.create_jobs, max_batch=max_batch)

    @property
    def inner(self) -> JobStore:
        """Return the wrapped store."""
        return self._inner

    async def create_job(
        self, job: JobRecord, *, claim: tuple[str, str] | None = None, lease_s: float = 60.0
    ) -> Claim:
        """Insert ``job`` (claiming its key first) in the next group commit."""
        return await self._commits.submit(NewJob(job, claim, lease_s))

    async def create_jobs(self, items: Sequence[NewJob]) -> list[Claim]:
        """Insert many jobs in one transaction (no grouping needed)."""
        return await self._inner.create_jobs(items)

    async def migrate(self) -> int:
        """Apply pending schema migrations."""
        return await self._inner.migrate()

    async def close(self) -> None:
        """Let the last group commit finish, then close the wrapped store."""
        await self._commits.drain()
        await self._inner.close()

    async def ping(self) -> None:
        """Probe the wrapped store."""
        await self._inner.ping()

    async def complete_claim(self, key: str, job_id: str, response: bytes, *, ttl_s: float) -> None:
        """Mark the key's request finished."""
        await self._inner.complete_claim(key, job_id, response, ttl_s=ttl_s)

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Delete a job that never reached the broker, and release its key."""
        await self._inner.abandon_job(job_id, key)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or ``None``."""
        return await self._inner.get_job(job_id)

    async def list_jobs(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Return one page of jobs."""
        return await self._inner.list_jobs(
            tenant=tenant, status=status, type=type, limit=limit, cursor=cursor
        )

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **fields: Any
    ) -> JobRecord | None:
        """Compare-and-set the job's status."""
        return await self._inner.transition(job_id, to, allowed_from=allowed_from, **fields)

    async def claim_execution(self, key: str, job_id: str, *, lease_s: float) -> Execution:
        """Claim the right to run ``key``'s effects."""
        return await self._inner.claim_execution(key, job_id, lease_s=lease_s)

    async def finish_execution(self, key: str, job_id: str, result: Any, *, ttl_s: float) -> None:
        """Mark ``key``'s effects done."""
        await self._inner.finish_execution(key, job_id, result, ttl_s=ttl_s)

    async def release_execution(self, key: str, job_id: str) -> None:
        """Give up ``job_id``'s claim on ``key``."""
        await self._inner.release_execution(key, job_id)

    async def count_delivery(self, job_id: str) -> int:
        """Count one more delivery of the job."""
        return await self._inner.count_delivery(job_id)

    async def start_runs(self, items: Sequence[RunStart]) -> list[RunStarted]:
        """Start many runs."""
        return await self._inner.start_runs(items)

    async def finish_runs(self, items: Sequence[RunFinish]) -> list[JobRecord | None]:
        """Finish many runs."""
        return await self._inner.finish_runs(items)

    async def record_breaker(self, breaker: BreakerRecord) -> None:
        """Record a worker's breaker state."""
        await self._inner.record_breaker(breaker)

    async def list_breakers(self, group: str | None = None) -> list[BreakerRecord]:
        """Return the recorded breakers."""
        return await self._inner.list_breakers(group)

    async def forget_breakers(self, worker: str) -> None:
        """Delete a worker's breaker rows."""
        await self._inner.forget_breakers(worker)

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert an API key."""
        await self._inner.create_api_key(key)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Return an API key, or ``None``."""
        return await self._inner.get_api_key(key_id)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every API key."""
        return await self._inner.list_api_keys()

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        """Revoke an API key."""
        return await self._inner.revoke_api_key(key_id, at)

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Record an API key's use."""
        await self._inner.touch_api_key(key_id, at)

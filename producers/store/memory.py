"""``InMemoryJobStore``: the ``JobStore`` port in a dict, for fast unit tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from producers.store.model import Claim, ClaimState, JobPage, JobRecord, JobStatus, NewJob


class InMemoryJobStore:
    """Keeps jobs and idempotency keys in memory with the same semantics as the SQL stores."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def migrate(self) -> int:
        """Return the schema version (there is nothing to migrate)."""
        return 1

    async def close(self) -> None:
        """Do nothing: there is nothing to release."""

    async def ping(self) -> None:
        """Return at once: memory is always there."""

    async def create_job(
        self, job: JobRecord, *, claim: tuple[str, str] | None = None, lease_s: float = 60.0
    ) -> Claim:
        """Insert ``job``, first claiming its idempotency key when ``claim`` is given."""
        async with self._lock:
            if claim is not None:
                key, request_hash = claim
                held = self.keys.get(key)
                now = time.monotonic()
                if held is not None and (held["state"] == "done" or held["lease_until"] > now):
                    if held["hash"] != request_hash:
                        return Claim(ClaimState.MISMATCH, held["job_id"])
                    if held["state"] == "done":
                        return Claim(ClaimState.DONE, held["job_id"], held["response"])
                    return Claim(ClaimState.IN_FLIGHT, held["job_id"])
                self.keys[key] = {
                    "hash": request_hash,
                    "job_id": job.id,
                    "state": "pending",
                    "lease_until": now + lease_s,
                    "response": None,
                }
            self.jobs[job.id] = job
            return Claim(ClaimState.NEW, job.id)

    async def create_jobs(self, items: Sequence[NewJob]) -> list[Claim]:
        """Run ``create_job`` for each item, in order."""
        return [await self.create_job(i.job, claim=i.claim, lease_s=i.lease_s) for i in items]

    async def complete_claim(self, key: str, response: bytes, *, ttl_s: float) -> None:
        """Mark the key done and keep ``response`` for replays."""
        held = self.keys.get(key)
        if held is not None:
            held.update(state="done", response=response)

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Forget a job that never reached the broker, and free its key."""
        self.jobs.pop(job_id, None)
        if key is not None and self.keys.get(key, {}).get("job_id") == job_id:
            del self.keys[key]

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job or ``None``."""
        return self.jobs.get(job_id)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Return jobs newest first (ids are time-ordered), filtered and paged by id."""
        chosen = sorted(self.jobs.values(), key=lambda j: j.id, reverse=True)
        chosen = [
            j
            for j in chosen
            if (status is None or j.status is status)
            and (type is None or j.type == type)
            and (cursor is None or j.id < cursor)
        ]
        page = chosen[:limit]
        more = len(chosen) > limit
        return JobPage(page, page[-1].id if more and page else None)

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **fields: Any
    ) -> JobRecord | None:
        """Move the job to ``to`` if its status is in ``allowed_from`` (compare-and-set)."""
        async with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.status not in allowed_from:
                return None
            updated = replace(job, status=to, **fields)
            self.jobs[job_id] = updated
            return updated

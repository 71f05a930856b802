"""``InMemoryJobStore``: the ``JobStore`` port in a dict, for fast unit tests.

The store contract tests (tests/producers/test_store.py) run against it as well as against
SQLite and PostgreSQL, so it keeps their semantics: UTC timestamps, JSON-only payloads,
compare-and-set transitions, idempotency leases and replay windows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from jobstore.model import (
    BREAKER_CHANGES_KEPT,
    ApiKeyRecord,
    AuditEntry,
    BreakerRecord,
    Claim,
    ClaimState,
    Confirmed,
    DataChange,
    JobEvent,
    JobPage,
    JobRecord,
    JobSearch,
    JobStatus,
    KeptFor,
    NewJob,
    RunEnd,
    RunJob,
    RunStart,
    RunStarted,
    Swept,
    check_settable,
    held_claim,
)
from jobstore.run_window import Row, missing_jobs, plan_window
from jobstore.shared_sql import load_migrations
from tests.fakes.flows import InMemoryFlows
from topology.errors import StoreError
from topology.names import Priority

_TIMES = ("created_at", "updated_at", "not_before", "started_at", "finished_at")
_JSON = ("payload", "payload_ref", "result")


class InMemoryJobStore(InMemoryFlows):
    """Keeps jobs and idempotency keys in memory with the same semantics as the SQL stores."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, JobRecord] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, float] = {}  # job id -> monotonic end of its run's claim
        self.deliveries: dict[str, int] = {}
        self.publish_by: dict[str, float] = {}  # job id -> monotonic deadline, until confirmed
        self.breakers: dict[tuple[str, str, str], BreakerRecord] = {}
        self.api_keys: dict[str, ApiKeyRecord] = {}
        self.audit: dict[str, AuditEntry] = {}
        self.events: dict[str, list[JobEvent]] = {}
        self.breaker_changes: list[BreakerRecord] = []
        self.fail_with: Exception | None = None  # set to make every call fail (an outage)
        self._closed = False
        self._lock = asyncio.Lock()

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if self._closed:
            raise StoreError("the job store is closed")

    async def migrate(self) -> int:
        """Return the schema version the SQL stores reach (there is nothing to migrate)."""
        self._check()
        return max(load_migrations("sqlite"))

    async def close(self) -> None:
        """Refuse further work (closing twice is fine)."""
        self._closed = True

    async def ping(self) -> None:
        """Return at once unless the store is set to fail or closed."""
        self._check()

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = (), durable: bool = True
    ) -> list[Claim]:
        """Insert the jobs in order, claiming their keys first, and record their publish deadlines."""
        self._check()
        stored = [_normalised(item.job) for item in items]  # a refused job stores nothing
        if confirmed:
            await self.confirm_jobs(confirmed)
        claims = []
        async with self._lock:
            for item, job in zip(items, stored, strict=True):
                claim = Claim(ClaimState.NEW, job.id)
                if item.claim is not None:
                    claim = self._claim(item.claim, job.id, item.lease_s)
                if claim.state is ClaimState.NEW:
                    self.jobs.setdefault(job.id, job)  # a worker may have created it first
                    if item.confirm_within is not None:
                        self.publish_by[job.id] = time.monotonic() + item.confirm_within
                claims.append(claim)
        return claims

    def _claim(self, claim: tuple[str, str], job_id: str, lease_s: float) -> Claim:
        key, request_hash = claim
        held = self.keys.get(key)
        now = time.monotonic()
        # "until" is the lease's end while pending, the replay window's end once done.
        if held is not None and held["until"] > now:
            return held_claim(
                request_hash, held["hash"], held["job_id"], held["state"], held["response"]
            )
        self.keys[key] = {
            "hash": request_hash,
            "job_id": job_id,
            "state": "pending",
            "until": now + lease_s,
            "response": None,
        }
        return Claim(ClaimState.NEW, job_id)

    async def confirm_jobs(self, items: Sequence[Confirmed]) -> None:
        """Clear the jobs' publish deadlines; complete the claims of those with a response."""
        self._check()
        for item in items:
            self.publish_by.pop(item.job_id, None)
            if item.response is None:
                continue
            for held in self.keys.values():
                if held["job_id"] == item.job_id and held["state"] == "pending":
                    until = time.monotonic() + item.ttl_s
                    held.update(state="done", response=item.response, until=until)

    async def take_unconfirmed(self, *, limit: int, lease_s: float) -> list[JobRecord]:
        """Return overdue queued or scheduled jobs, pushing their deadlines ``lease_s`` on."""
        self._check()
        now = time.monotonic()
        taken: list[JobRecord] = []
        for job_id, deadline in sorted(self.publish_by.items(), key=lambda kv: kv[1]):
            job = self.jobs.get(job_id)
            if deadline > now:
                continue
            if job is None or job.status not in (JobStatus.QUEUED, JobStatus.SCHEDULED):
                del self.publish_by[job_id]
            elif len(taken) < limit:
                self.publish_by[job_id] = now + lease_s
                taken.append(job)
        return sorted(taken, key=lambda j: j.id)

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Forget a job that never reached the broker (not one a worker started), and its keys."""
        self._check()
        job = self.jobs.get(job_id)
        if job is None or job.status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            self._forget(job_id)

    async def sweep(self, kept_for: KeptFor, *, limit: int, ask: Sequence[str] = ()) -> Swept:
        """Forget up to ``limit`` final jobs that ended over ``kept_for`` seconds ago, oldest first."""
        self._check()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        now = datetime.now(UTC)
        unknown = [job_id for job_id in ask if job_id not in self.jobs]
        due = sorted(
            (
                job
                for job in self.jobs.values()
                if job.status.terminal
                and job.finished_at is not None
                and now - job.finished_at
                > timedelta(seconds=kept_for(job.type, job.status is JobStatus.DEAD))
            ),
            key=lambda job: job.finished_at or now,
        )[:limit]
        for job in due:
            self._forget(job.id)
        blobs = [job.payload_ref["uri"] for job in due if job.payload_ref is not None]
        return Swept(len(due), blobs, unknown)

    def _forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.events.pop(job_id, None)  # as ON DELETE CASCADE does
        self.publish_by.pop(job_id, None)
        # As in the SQL stores, where a job's keys go with it (ON DELETE CASCADE).
        for name in [k for k, held in self.keys.items() if held["job_id"] == job_id]:
            del self.keys[name]

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job or ``None``."""
        self._check()
        return self.jobs.get(job_id)

    async def list_jobs(self, search: JobSearch = JobSearch()) -> JobPage:
        """Return jobs newest first (ids are time-ordered), filtered and paged by id."""
        self._check()
        limit, s = search.limit, search
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        since, before = search.created
        chosen = [
            j
            for j in sorted(self.jobs.values(), key=lambda j: j.id, reverse=True)
            if (s.tenant is None or j.tenant == s.tenant)
            and (s.status is None or j.status is s.status)
            and (s.type is None or j.type == s.type)
            and (s.cursor is None or j.id < s.cursor)
            and (s.correlation_id is None or j.correlation_id == s.correlation_id)
            and (since is None or j.created_at >= since)
            and (before is None or j.created_at < before)
        ]
        page = chosen[:limit]
        return JobPage(page, page[-1].id if len(chosen) > limit and page else None)

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **changes: Any
    ) -> JobRecord | None:
        """Move the job to ``to`` if its status is in ``allowed_from`` (compare-and-set)."""
        self._check()
        check_settable(changes)
        async with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.status not in allowed_from:
                return None
            if "deliveries" in changes:
                self.deliveries[job_id] = changes.pop("deliveries")
            updated = _normalised(replace(job, status=to, **changes))
            self.jobs[job_id] = updated
            return updated

    async def revive(self, job_id: str, at: datetime) -> bool:
        """Move a dead-lettered job back to queued, attempts and deliveries at 0; whether it was."""
        self._check()
        job = self.jobs.get(job_id)
        revivable = {JobStatus.DEAD, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING}
        if job is None or job.status not in revivable:
            return False
        self.jobs[job_id] = _normalised(
            replace(job, status=JobStatus.QUEUED, attempts=0, finished_at=None, updated_at=at)
        )
        self.deliveries[job_id] = 0
        return True

    async def replace_data(self, changes: Sequence[DataChange]) -> None:
        """Write each change where the column still holds its old value (see ``JobStore.replace_data``)."""
        self._check()
        async with self._lock:
            for change in changes:
                job = self.jobs.get(change.job_id)
                if job is not None and getattr(job, change.column) == change.old:
                    self.jobs[change.job_id] = replace(job, **{change.column: change.new})

    async def run_window(
        self, ends: Sequence[RunEnd], starts: Sequence[RunStart]
    ) -> tuple[list[RunJob | None], list[RunStarted]]:
        """End and start a window of runs at once (see ``JobStore.run_window``)."""
        self._check()
        async with self._lock:
            now = time.monotonic()
            rows = {
                job_id: _row(
                    job, self.deliveries.get(job_id, 0), self.claims.get(job_id, 0.0) > now
                )
                for job_id in {e.job_id for e in ends} | {s.job_id for s in starts}
                if (job := self.jobs.get(job_id)) is not None
            }
            created = {job.id: _normalised(job) for job in missing_jobs(rows, ends, starts)}
            rows.update((job_id, _row(job, 0, held=False)) for job_id, job in created.items())
            plan = plan_window(rows, ends, starts)
            # Every value checked first, so a refused one changes nothing (one transaction).
            found = self.jobs | created
            changed = {end.job_id: _ended(found[end.job_id], end) for end in plan.ends}
            self.jobs.update(created)
            self.jobs.update(changed)
            for end in plan.ends:
                self.claims.pop(end.job_id, None)
                if end.event is not None:
                    self._add_event(end.event)
            for start in plan.starts:
                self.claims[start.job_id] = now + start.lease_s
                self.deliveries[start.job_id] = self.deliveries.get(start.job_id, 0) + 1
                job = self.jobs[start.job_id]
                self.jobs[start.job_id] = _normalised(
                    replace(
                        job,
                        status=JobStatus.RUNNING,
                        attempts=start.attempt,
                        started_at=start.started_at,
                        updated_at=start.started_at,
                    )
                )
            return plan.ended, plan.started

    async def record_breaker(self, breaker: BreakerRecord) -> None:
        """Insert or replace the row of ``breaker``'s (group, dependency, worker)."""
        self._check()
        if breaker.changed_at.tzinfo is None:
            raise ValueError(f"changed_at must be timezone-aware, got {breaker.changed_at!r}")
        stored = replace(breaker, changed_at=breaker.changed_at.astimezone(UTC))
        self.breakers[(breaker.group, breaker.dependency, breaker.worker)] = stored
        self.breaker_changes = [*self.breaker_changes, stored][-BREAKER_CHANGES_KEPT:]

    async def list_breaker_changes(self, *, limit: int = 50) -> list[BreakerRecord]:
        """Return the latest ``limit`` breaker transitions, newest first."""
        self._check()
        return self.breaker_changes[::-1][:limit]

    async def record_events(self, events: Sequence[JobEvent]) -> None:
        """Add the events of jobs that exist."""
        self._check()
        for event in events:
            if event.job_id in self.jobs:
                self._add_event(event)

    async def list_events(self, job_id: str, *, limit: int = 200) -> list[JobEvent]:
        """Return the job's first ``limit`` events, oldest first."""
        self._check()
        return self.events.get(job_id, [])[:limit]

    def _add_event(self, event: JobEvent) -> None:
        if event.at.tzinfo is None:
            raise ValueError(f"at must be timezone-aware, got {event.at!r}")
        stored = replace(event, at=event.at.astimezone(UTC))
        self.events.setdefault(event.job_id, []).append(stored)

    async def list_breakers(self, group: str | None = None) -> list[BreakerRecord]:
        """Return the recorded breakers, of ``group`` only when given, by group, dependency, worker."""
        self._check()
        return [self.breakers[k] for k in sorted(self.breakers) if group in (None, k[0])]

    async def forget_breakers(self, worker: str) -> None:
        """Delete every breaker row of ``worker``."""
        self._check()
        for key in [k for k in self.breakers if k[2] == worker]:
            del self.breakers[key]

    async def queued_counts(self) -> list[tuple[str, Priority, int]]:
        """Return how many jobs wait queued, by job type and priority."""
        self._check()
        counts = Counter(
            (j.type, j.priority) for j in self.jobs.values() if j.status is JobStatus.QUEUED
        )
        return [(job_type, priority, n) for (job_type, priority), n in counts.items()]

    async def record_audit(self, entry: AuditEntry) -> None:
        """Insert ``entry``, or replace the entry of its id."""
        self._check()
        self.audit[entry.id] = entry

    async def list_audit(self, tenant: str, group: str, *, limit: int = 20) -> list[AuditEntry]:
        """Return the latest ``limit`` entries of ``tenant``'s operations on ``group``, newest first."""
        self._check()
        found = [e for e in self.audit.values() if e.tenant == tenant and e.group == group]
        return sorted(found, key=lambda e: e.id, reverse=True)[:limit]

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert ``key``; raise ``StoreError`` when its id is taken."""
        self._check()
        if key.id in self.api_keys:
            raise StoreError(f"an API key with id {key.id!r} exists")
        self.api_keys[key.id] = key

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Return the key with id ``key_id``, or ``None``."""
        self._check()
        return self.api_keys.get(key_id)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every key, oldest first."""
        self._check()
        return sorted(self.api_keys.values(), key=lambda k: (k.created_at, k.id))

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        """Mark the key revoked at ``at`` unless it already is; ``None`` if unknown."""
        self._check()
        key = self.api_keys.get(key_id)
        if key is not None and key.revoked_at is None:
            key = self.api_keys[key_id] = replace(key, revoked_at=at.astimezone(UTC))
        return key

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Move the key's last use forward to ``at``."""
        self._check()
        key = self.api_keys.get(key_id)
        if key is not None and (key.last_used_at is None or key.last_used_at < at):
            self.api_keys[key_id] = replace(key, last_used_at=at.astimezone(UTC))


def _row(job: JobRecord, deliveries: int, held: bool) -> Row:
    """Return ``job`` as a window reads it."""
    fields = (job.id, job.type, job.status, job.attempts, job.last_error, job.tenant)
    return Row(RunJob(*fields, job.callback_url, job.workflow_id), deliveries, held)


def _ended(job: JobRecord, end: RunEnd) -> JobRecord:
    """Return ``job`` as ``end`` leaves it (see ``RunEnd``)."""
    changes: dict[str, Any] = {"updated_at": end.at}
    if end.status is not None:
        changes["status"] = end.status
        if end.status.terminal:
            changes["finished_at"] = end.at
    if end.result is not None:
        changes["result"] = end.result
    if end.error is not None:
        changes["last_error"] = end.error
    return _normalised(replace(job, **changes))


def _normalised(job: JobRecord) -> JobRecord:
    """Return ``job`` as a SQL store would give it back: UTC times, JSON round-tripped."""
    changes: dict[str, Any] = {}
    for name in _TIMES:
        value: datetime | None = getattr(job, name)
        if value is not None:
            if value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {value!r}")
            changes[name] = value.astimezone(UTC)
    for name in _JSON:
        value_json = getattr(job, name)
        if value_json is not None:
            try:
                changes[name] = orjson.loads(orjson.dumps(value_json))
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise StoreError(f"{name} is not JSON: {exc}") from exc
    return replace(job, **changes)

"""The job store methods whose SQL is the same on SQLite and PostgreSQL, written once over ``$n`` parameters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobstore.model import (
    ApiKeyRecord,
    BreakerRecord,
    Claim,
    Confirmed,
    DataChange,
    JobPage,
    JobRecord,
    JobStatus,
    NewJob,
    check_settable,
)

COLUMNS = tuple(JobRecord.__dataclass_fields__)
INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(COLUMNS) + 1))})"
    " ON CONFLICT (id) DO NOTHING"
)
"""Insert a job unless its row exists: the worker that ran it first created it from its message."""
PURGE_BATCH = 100  # expired keys deleted per completion, so the table stays bounded
_BREAKER = "group_name, dependency, worker, state, failures, changed_at"
_KEY = "id, name, secret_hash, tenant, scopes, job_types, created_at, expires_at, revoked_at, last_used_at"
_SELECT_KEYS = f"SELECT {_KEY} FROM api_keys"
_SELECT_JOBS = f"SELECT {', '.join(COLUMNS)} FROM jobs"


class SharedSql:
    """Job reads and updates, API keys and breakers; a store supplies the hooks that raise here."""

    async def _fetch(self, sql: str, *args: Any) -> Sequence[Any]:
        """Run one statement with numbered parameters and return its rows."""
        raise NotImplementedError

    async def _execute(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Run statements with numbered parameters in one transaction."""
        raise NotImplementedError

    def _value_in(self, column: str, value: Any) -> Any:
        """Return ``value`` as the jobs table's ``column`` takes it; raise ``ValueError`` on a naive time."""
        raise NotImplementedError

    def _time_in(self, when: datetime | None) -> Any:
        """Return ``when`` as a time column stores it (``None`` stays); raise ``ValueError`` if naive."""
        raise NotImplementedError

    def _time_out(self, value: Any) -> datetime:
        """Return the time a time column holds."""
        raise NotImplementedError

    def _job(self, row: Any) -> JobRecord:
        """Return the job a jobs row (all columns, in ``JobRecord`` order) holds."""
        raise NotImplementedError

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = (), durable: bool = True
    ) -> list[Claim]:
        """Insert many jobs, claiming their keys first, in one transaction."""
        raise NotImplementedError

    async def create_job(
        self, job: JobRecord, *, claim: tuple[str, str] | None = None, lease_s: float = 60.0
    ) -> Claim:
        """Insert ``job``, first claiming its idempotency key in the same transaction."""
        (outcome,) = await self.create_jobs([NewJob(job, claim, lease_s)])
        return outcome

    async def replace_data(self, changes: Sequence[DataChange]) -> None:
        """Write each change's new payload or result, where the column still holds its old value."""
        # Compare-and-set: a result a worker wrote meanwhile is never overwritten.
        await self._execute(
            *(
                (
                    f"UPDATE jobs SET {c.column} = $2 WHERE id = $1 AND {c.column} = $3",
                    (c.job_id, self._value_in(c.column, c.new), self._value_in(c.column, c.old)),
                )
                for c in changes
                if c.column in ("payload", "result")
            )
        )

    async def abandon_job(self, job_id: str, key: str | None) -> None:
        """Delete a job that never reached the broker, and free its key if the key is still its.

        A job a worker started is kept, key and all: its message did reach a queue (a confirm
        lost with the connection looks like a publish that failed).
        """
        delete_job = (
            "DELETE FROM jobs WHERE id = $1 AND status IN ('queued', 'scheduled')",
            (job_id,),
        )
        free_key = (
            "DELETE FROM idempotency_keys WHERE key = $1 AND job_id = $2"
            " AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = $2)",
            (key, job_id),
        )
        await self._execute(delete_job, *((free_key,) if key is not None else ()))

    async def get_job(self, job_id: str) -> JobRecord | None:
        """Return the job, or ``None`` when there is no such job."""
        rows = await self._fetch(f"{_SELECT_JOBS} WHERE id = $1", job_id)
        return next((self._job(row) for row in rows), None)

    async def list_jobs(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Return jobs newest first (by UUIDv7 id), filtered, ``limit`` per page, after ``cursor``."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        # Only the filters given reach the SQL, so every variant is a plain index range scan;
        # str() turns a JobStatus into its value.
        given = {"tenant": tenant, "status": status, "type": type}
        tests = [
            (f"{column} = ", str(value)) for column, value in given.items() if value is not None
        ]
        if cursor is not None:
            tests.append(("id < ", cursor))
        where = " AND ".join(f"{test}${n}" for n, (test, _) in enumerate(tests, start=1))
        # One row more than the page tells whether another page follows.
        rows = await self._fetch(
            f"{_SELECT_JOBS}{' WHERE ' if where else ''}{where} ORDER BY id DESC LIMIT ${len(tests) + 1}",
            *(value for _, value in tests),
            limit + 1,
        )
        jobs = [self._job(row) for row in rows[:limit]]
        return JobPage(jobs, jobs[-1].id if len(rows) > limit else None)

    async def transition(
        self, job_id: str, to: JobStatus, *, allowed_from: frozenset[JobStatus], **fields: Any
    ) -> JobRecord | None:
        """Move the job to ``to`` and set ``fields`` only if its status is in ``allowed_from``; ``TypeError`` for unsettable fields."""
        check_settable(fields)
        if not allowed_from:
            return None
        sets = "".join(f", {name} = ${n}" for n, name in enumerate(fields, start=3))
        first = 3 + len(fields)
        marks = ", ".join(f"${n}" for n in range(first, first + len(allowed_from)))
        # One statement is atomic on its own: the status test and the update cannot be split (a
        # racing PostgreSQL update waits for the row lock, then re-checks the committed row).
        rows = await self._fetch(
            f"UPDATE jobs SET status = $1{sets} WHERE id = $2 AND status IN ({marks})"
            f" RETURNING {', '.join(COLUMNS)}",
            to.value,
            job_id,
            *(self._value_in(name, value) for name, value in fields.items()),
            *(status.value for status in allowed_from),
        )
        return next((self._job(row) for row in rows), None)

    async def record_breaker(self, breaker: BreakerRecord) -> None:
        """Insert or replace the row of ``breaker``'s (group, dependency, worker)."""
        await self._fetch(
            f"INSERT INTO breakers ({_BREAKER}) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (group_name, dependency, worker) DO UPDATE SET state = excluded.state,"
            " failures = excluded.failures, changed_at = excluded.changed_at",
            breaker.group,
            breaker.dependency,
            breaker.worker,
            breaker.state,
            breaker.failures,
            self._time_in(breaker.changed_at),
        )

    async def list_breakers(self, group: str | None = None) -> list[BreakerRecord]:
        """Return the recorded breakers, of ``group`` only when given, by group, dependency, worker."""
        where, args = (" WHERE group_name = $1", (group,)) if group is not None else ("", ())
        rows = await self._fetch(
            f"SELECT {_BREAKER} FROM breakers{where} ORDER BY group_name, dependency, worker", *args
        )
        return [
            BreakerRecord(group, dependency, worker, state, int(failures), self._time_out(changed))
            for group, dependency, worker, state, failures, changed in rows
        ]

    async def forget_breakers(self, worker: str) -> None:
        """Delete every breaker row of ``worker``."""
        await self._fetch("DELETE FROM breakers WHERE worker = $1", worker)

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Insert ``key``; raise ``StoreError`` when its id is taken."""
        await self._fetch(
            f"INSERT INTO api_keys ({_KEY}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            key.id,
            key.name,
            key.secret_hash,
            key.tenant,
            " ".join(key.scopes),
            None if key.job_types is None else " ".join(key.job_types),
            *map(self._time_in, (key.created_at, key.expires_at, key.revoked_at, key.last_used_at)),
        )

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """Return the key with id ``key_id`` (revoked and expired ones too), or ``None``."""
        rows = await self._fetch(f"{_SELECT_KEYS} WHERE id = $1", key_id)
        return next((self._api_key(row) for row in rows), None)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every key, oldest first."""
        return [
            self._api_key(r) for r in await self._fetch(f"{_SELECT_KEYS} ORDER BY created_at, id")
        ]

    async def revoke_api_key(self, key_id: str, at: datetime) -> ApiKeyRecord | None:
        """Mark the key revoked at ``at`` unless it already is; ``None`` if unknown."""
        rows = await self._fetch(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1"
            f" RETURNING {_KEY}",
            key_id,
            self._time_in(at),
        )
        return next((self._api_key(row) for row in rows), None)

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Move the key's last use forward to ``at`` (never back in time)."""
        await self._fetch(
            "UPDATE api_keys SET last_used_at = $2"
            " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            key_id,
            self._time_in(at),
        )

    def _api_key(self, row: Sequence[Any]) -> ApiKeyRecord:
        key_id, name, digest, tenant, scopes, job_types, created, expires, revoked, used = row
        return ApiKeyRecord(
            id=key_id,
            name=name,
            secret_hash=bytes(digest),
            tenant=tenant,
            scopes=tuple(scopes.split()),
            job_types=None if job_types is None else tuple(job_types.split()),
            created_at=self._time_out(created),
            expires_at=None if expires is None else self._time_out(expires),
            revoked_at=None if revoked is None else self._time_out(revoked),
            last_used_at=None if used is None else self._time_out(used),
        )

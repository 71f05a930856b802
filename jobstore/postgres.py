"""``PostgresJobStore``: the ``JobStore`` port on PostgreSQL through an asyncpg pool (the at-scale store)."""

# Times are timestamptz; JSON is jsonb, sent and read as orjson text as on SQLite. Leases and
# replay windows use the server's clock (now()), so machines agree on them.

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from asyncpg import exceptions as pg

from jobstore.model import (
    Claim,
    ClaimState,
    Confirmed,
    NewJob,
)
from jobstore.run_window import RUN_COLUMNS, START_RUN, RunWindowSql
from jobstore.schedule_sql import ScheduleSql
from jobstore.shared_sql import (
    CLAIM_KEY,
    CLEAR_MOVED_ON,
    COLUMNS,
    JSON,
    PURGE_BATCH,
    TAKE_UNCONFIRMED,
    Query,
    T,
    Talk,
    load_migrations,
)
from topology.errors import StoreError, StoreUnavailableError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection = PoolConnectionProxy[asyncpg.Record]

_FOREIGN = (
    pg.PostgresError,
    pg.InterfaceError,
    pg.InternalClientError,
    OSError,
    orjson.JSONEncodeError,
)
# Errors that say "the server cannot serve us right now", not "this request is wrong": connection
# trouble (08), resources (53), shutdown or start-up (57), a dropped database (3D000), a
# deadlock or serialization failure (40). OSError covers refused sockets and timeouts.
_UNAVAILABLE = (
    OSError,
    pg.PostgresConnectionError,
    pg.InsufficientResourcesError,
    pg.OperatorInterventionError,
    pg.InvalidCatalogNameError,
    pg.TransactionRollbackError,
)
_MIGRATION_LOCK = 0x7461736B71  # "taskq": one advisory lock id that every migrator takes
_CONFIRM = "DELETE FROM unconfirmed WHERE job_id = ANY($1::text[])"
# A batch's new jobs, with the confirms held so far, in one statement (one round trip however
# many rows): the rows as one jsonb array, inserted in id order as a worker creating some of
# them first does, and the publish deadlines of those whose object carries one (a float8[]
# parameter would cost each new connection a type lookup). Its SELECT sets how the transaction
# commits: without waiting for the WAL flush when ``durable`` is false (a NULL keeps the
# server's setting).
_CREATE = (
    "WITH confirmed AS (DELETE FROM unconfirmed WHERE job_id = ANY($2::text[])),"
    f" job AS (INSERT INTO jobs ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)}"
    " FROM jsonb_populate_recordset(NULL::jobs, $1::jsonb) ORDER BY id"
    " ON CONFLICT (id) DO NOTHING RETURNING id),"
    " deadline AS (INSERT INTO unconfirmed (job_id, publish_by)"
    " SELECT id, now() + make_interval(secs => (d ->> 'confirm_within')::float8)"
    " FROM job JOIN jsonb_array_elements($1::jsonb) AS d ON d ->> 'id' = job.id"
    " WHERE d ->> 'confirm_within' IS NOT NULL)"
    " SELECT set_config('synchronous_commit',"
    " coalesce($3::text, current_setting('synchronous_commit')), true)"
)
_CREATE_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)
# One statement (one round trip, one commit) completes the key and purges up to a batch of
# expired ones; SKIP LOCKED lets concurrent completions purge different rows instead of waiting
# on each other, and ``job_id <> $1`` keeps the two parts off the same row.
_COMPLETE = f"""
WITH purged AS (
    DELETE FROM idempotency_keys WHERE key IN (
        SELECT key FROM idempotency_keys WHERE expires_at <= now() AND job_id <> $1
        LIMIT {PURGE_BATCH} FOR UPDATE SKIP LOCKED))
UPDATE idempotency_keys SET state = 'done', response = $2, expires_at = now() + make_interval(secs => $3)
WHERE job_id = $1 AND state = 'pending'
"""
# A window's jobs, locked until its commit; the payload stays out (the message carries it).
_READ_WINDOW = (
    f"SELECT {', '.join(RUN_COLUMNS)}, deliveries, claim_until > now() FROM jobs"
    " WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
)


class PostgresJobStore(RunWindowSql, ScheduleSql):
    """Jobs and idempotency keys in PostgreSQL, over an asyncpg pool created on first use."""

    # A conversation locks the workflows it changes (in id order, after the window's jobs);
    # it cancels only the steps no run window holds, so two windows never wait on each other.
    _locking = " FOR UPDATE"
    _skip_locked = " FOR UPDATE OF j SKIP LOCKED"
    _start = START_RUN.format(until="now() + make_interval(secs => $4)")
    _claim_key = CLAIM_KEY.format(until="now() + make_interval(secs => $4)", now="now()")
    _clear_moved_on = CLEAR_MOVED_ON.format(now="now()")
    _take_unconfirmed = TAKE_UNCONFIRMED.format(
        until="now() + make_interval(secs => $2)", now="now()", lock=" FOR UPDATE SKIP LOCKED"
    )

    def __init__(
        self, dsn: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 10.0
    ) -> None:
        self._create_pool = functools.partial(
            asyncpg.create_pool,
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            reset=_keep_session,
        )
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def migrate(self) -> int:
        """Apply pending schema migrations in one transaction; return the version."""
        # Every migrator takes one transaction-scoped advisory lock first, so processes that
        # start together apply each file once, in order, and all return the same version.
        async with self._use(transaction=True) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(_CREATE_VERSIONS)
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
            for version, sql in load_migrations("postgres", current).items():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                current = version
        return int(current)

    async def close(self) -> None:
        """Close the pool; later calls raise ``StoreError``."""
        async with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            async with self._translated():
                await pool.close()

    async def create_jobs(
        self, items: Sequence[NewJob], *, confirmed: Sequence[Confirmed] = (), durable: bool = True
    ) -> list[Claim]:
        """Insert many jobs (claiming their keys first, in order) in one transaction (not ``durable``: ``synchronous_commit`` off)."""
        # Without keys to claim or complete, the one statement is the whole transaction.
        keyed = any(i.claim for i in items) or any(c.response is not None for c in confirmed)
        async with self._use(transaction=keyed) as conn:
            await _complete(conn, confirmed)  # first: a claim of a key it completes replays it
            claims = await _talked(conn, self._claiming(items))
            new = [i for i, c in zip(items, claims, strict=True) if c.state is ClaimState.NEW]
            await conn.execute(
                _CREATE,
                orjson.dumps([self._document(i) for i in new]).decode(),
                [c.job_id for c in confirmed],
                None if durable else "off",
            )
        return claims

    async def confirm_jobs(self, items: Sequence[Confirmed]) -> None:
        """Clear the jobs' publish deadlines and complete their keys' claims in one transaction."""
        async with self._use(transaction=any(i.response is not None for i in items)) as conn:
            await conn.execute(_CONFIRM, [i.job_id for i in items])
            await _complete(conn, items)

    def _read_window(self, ids: Sequence[str]) -> Query:
        return Query(_READ_WINDOW, (ids,))

    def _lease(self, seconds: float) -> tuple[float]:
        return (float(seconds),)

    async def _talk(self, talk: Talk[T]) -> T:
        """Run the conversation ``talk`` in one transaction."""
        async with self._use(transaction=True) as conn:
            return await _talked(conn, talk)

    def _document(self, item: NewJob) -> dict[str, Any]:
        """Return ``item`` as an object of ``_CREATE``'s array, its JSON columns as JSON values."""
        values = [(name, getattr(item.job, name)) for name in COLUMNS]
        document = {name: v if name in JSON else self._value_in(name, v) for name, v in values}
        document["confirm_within"] = item.confirm_within
        return document

    @asynccontextmanager
    async def _use(self, *, transaction: bool = False) -> AsyncIterator[Connection]:
        """Lend a pooled connection for one unit of work, inside a transaction if asked."""
        async with self._translated():
            pool = self._pool
            if pool is None:
                async with self._lock:
                    if self._closed:
                        raise StoreError("the job store is closed")
                    pool = self._pool = self._pool or await self._create_pool()
            async with pool.acquire() as conn, conn.transaction() if transaction else nullcontext():
                yield conn

    @asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """Turn asyncpg, OS and JSON errors into ``StoreError`` (the one seam for foreign errors)."""
        try:
            yield
        except _FOREIGN as exc:
            if isinstance(exc, _UNAVAILABLE):
                raise StoreUnavailableError(
                    f"the PostgreSQL job store is unavailable: {exc}"
                ) from exc
            raise StoreError(f"the PostgreSQL job store failed: {exc}") from exc

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one statement and return its rows."""
        async with self._use() as conn:
            return await conn.fetch(sql, *args)


async def _talked(conn: Connection, talk: Talk[T]) -> T:
    """Run each statement ``talk`` yields on ``conn``, sending it the rows; its answer."""
    try:
        query = next(talk)
        while True:
            if query.many:
                if query.rows:
                    await conn.executemany(query.sql, query.rows)
                query = talk.send([])
            else:
                query = talk.send([tuple(row) for row in await conn.fetch(query.sql, *query.args)])
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _complete(conn: Connection, items: Sequence[Confirmed]) -> None:
    """Complete the claims of the keys of the items that carry a response, on ``conn``."""
    done = [(i.job_id, i.response, float(i.ttl_s)) for i in items if i.response is not None]
    if done:
        await conn.executemany(_COMPLETE, done)


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Hand a connection back as it is: the store leaves no session state to reset (a round trip)."""
    # Its locks and settings are transaction-scoped; the pool still rolls back an open transaction.

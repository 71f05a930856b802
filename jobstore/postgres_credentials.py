"""The ``api_keys`` table in PostgreSQL: the SQL behind ``PostgresJobStore``'s credential methods."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from jobstore.credentials import ApiKeyRecord

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection = PoolConnectionProxy[asyncpg.Record]

_COLUMNS = (
    "id, name, secret_hash, tenant, scopes, job_types, created_at, expires_at, revoked_at,"
    " last_used_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM api_keys"


async def insert(conn: Connection, key: ApiKeyRecord) -> None:
    """Insert ``key`` (one statement); a taken id raises ``UniqueViolationError``."""
    for when in (key.created_at, key.expires_at, key.revoked_at, key.last_used_at):
        _aware(when)
    await conn.execute(
        f"INSERT INTO api_keys ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        key.id,
        key.name,
        key.secret_hash,
        key.tenant,
        " ".join(key.scopes),
        None if key.job_types is None else " ".join(key.job_types),
        key.created_at,
        key.expires_at,
        key.revoked_at,
        key.last_used_at,
    )


async def select_one(conn: Connection, key_id: str) -> ApiKeyRecord | None:
    """Return the key with id ``key_id``, or ``None``."""
    row = await conn.fetchrow(f"{_SELECT} WHERE id = $1", key_id)
    return None if row is None else _record(row)


async def select_all(conn: Connection) -> list[ApiKeyRecord]:
    """Return every key, oldest first."""
    return [_record(row) for row in await conn.fetch(f"{_SELECT} ORDER BY created_at, id")]


async def revoke(conn: Connection, key_id: str, at: datetime) -> ApiKeyRecord | None:
    """Mark the key revoked at ``at`` unless it already is; return it, or ``None`` if unknown."""
    _aware(at)
    await conn.execute(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", key_id, at
    )
    return await select_one(conn, key_id)


async def touch(conn: Connection, key_id: str, at: datetime) -> None:
    """Move the key's last use forward to ``at`` (one statement)."""
    _aware(at)
    await conn.execute(
        "UPDATE api_keys SET last_used_at = $2"
        " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
        key_id,
        at,
    )


def _aware(when: datetime | None) -> None:
    if when is not None and when.utcoffset() is None:
        raise ValueError(f"job store times must be timezone-aware, got naive {when.isoformat()}")


def _record(row: asyncpg.Record) -> ApiKeyRecord:
    job_types = row["job_types"]
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        secret_hash=bytes(row["secret_hash"]),
        tenant=row["tenant"],
        scopes=tuple(row["scopes"].split()),
        job_types=None if job_types is None else tuple(job_types.split()),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )

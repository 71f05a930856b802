"""The ``api_keys`` table in SQLite: the SQL behind ``SqliteJobStore``'s credential methods."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from jobstore.credentials import ApiKeyRecord
from jobstore.sqlite_rows import to_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = (
    "id, name, secret_hash, tenant, scopes, job_types, created_at, expires_at, revoked_at,"
    " last_used_at"
)
_SELECT = f"SELECT {_COLUMNS} FROM api_keys"


def insert(db: sqlite3.Connection, key: ApiKeyRecord) -> None:
    """Insert ``key`` (one statement); a taken id raises ``sqlite3.IntegrityError``."""
    db.execute(
        f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key.id,
            key.name,
            key.secret_hash,
            key.tenant,
            " ".join(key.scopes),
            None if key.job_types is None else " ".join(key.job_types),
            to_us(key.created_at),
            _us(key.expires_at),
            _us(key.revoked_at),
            _us(key.last_used_at),
        ),
    )


def select_one(db: sqlite3.Connection, key_id: str) -> ApiKeyRecord | None:
    """Return the key with id ``key_id``, or ``None``."""
    rows = db.execute(f"{_SELECT} WHERE id = ?", (key_id,)).fetchall()
    return next((_record(row) for row in rows), None)


def select_all(db: sqlite3.Connection) -> list[ApiKeyRecord]:
    """Return every key, oldest first."""
    return [_record(row) for row in db.execute(f"{_SELECT} ORDER BY created_at, id").fetchall()]


def revoke(db: sqlite3.Connection, key_id: str, at: datetime) -> ApiKeyRecord | None:
    """Mark the key revoked at ``at`` unless it already is; return it, or ``None`` if unknown."""
    db.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (to_us(at), key_id),
    )
    return select_one(db, key_id)


def touch(db: sqlite3.Connection, key_id: str, at: datetime) -> None:
    """Move the key's last use forward to ``at`` (one statement)."""
    when = to_us(at)
    db.execute(
        "UPDATE api_keys SET last_used_at = ?"
        " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
        (when, key_id, when),
    )


def _us(when: datetime | None) -> int | None:
    return None if when is None else to_us(when)


def _time(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _record(row: Sequence[Any]) -> ApiKeyRecord:
    key_id, name, digest, tenant, scopes, job_types, created, expires, revoked, used = row
    return ApiKeyRecord(
        id=key_id,
        name=name,
        secret_hash=bytes(digest),
        tenant=tenant,
        scopes=tuple(scopes.split()),
        job_types=None if job_types is None else tuple(job_types.split()),
        created_at=_EPOCH + timedelta(microseconds=created),
        expires_at=_time(expires),
        revoked_at=_time(revoked),
        last_used_at=_time(used),
    )

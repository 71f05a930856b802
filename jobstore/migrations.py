"""Schema migrations: numbered SQL files shipped inside the package, one folder per backend."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

from topology.errors import StoreError

Dialect = Literal["sqlite", "postgres"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def load_migrations(dialect: Dialect) -> list[Migration]:
    """Return the dialect's migrations in version order."""
    folder = files("jobstore") / "migrations" / dialect
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise StoreError(f"migration file {dialect}/{entry.name} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise StoreError(
                f"migrations {found[version].name} and {entry.name} share number {version}"
            )
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def pending(migrations: list[Migration], current: int) -> list[Migration]:
    """Return the migrations numbered above ``current``, in order."""
    return [m for m in migrations if m.version > current]


def sqlite_statements(script: str) -> list[str]:
    """Split a SQLite script into statements, the way SQLite itself finds their ends."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not _only_comments(buffer):
        raise StoreError(f"migration ends with an unterminated statement: {buffer.strip()[:60]!r}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())

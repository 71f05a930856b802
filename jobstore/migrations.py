"""Schema migrations: numbered SQL files shipped inside the package, one folder per backend."""

from __future__ import annotations

import re
import sqlite3
from importlib.resources import files
from typing import Literal

from topology.errors import StoreError

Dialect = Literal["sqlite", "postgres"]

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def load_migrations(dialect: Dialect, above: int = 0) -> dict[int, str]:
    """Return the SQL of the dialect's migrations (files named ``NNNN_name.sql``) numbered over ``above``, by version, in order."""
    found: dict[int, str] = {}
    for entry in (files("jobstore") / "migrations" / dialect).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None or int(match[1]) in found:
            raise StoreError(
                f"migration {dialect}/{entry.name} is not named NNNN_name.sql with a number of its own"
            )
        found[int(match[1])] = entry.read_text(encoding="utf-8")
    return {version: sql for version, sql in sorted(found.items()) if version > above}


def sqlite_statements(script: str) -> list[str]:
    """Split a SQLite script into statements, the way SQLite itself finds their ends."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if any(line.strip() and not line.strip().startswith("--") for line in buffer.splitlines()):
        raise StoreError(f"migration ends with an unterminated statement: {buffer.strip()[:60]!r}")
    return statements

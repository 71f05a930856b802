"""SQL conversations: a generator of statements, written once, that either store runs in one transaction."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Query:
    """One statement over ``$n`` parameters: run once with ``args`` (its rows sent back), or once per row of ``rows``."""

    sql: str
    args: Sequence[Any] = ()
    rows: Sequence[Sequence[Any]] = field(default=())
    many: bool = False


Talk = Generator[Query, list[Any], T]
"""A conversation: it yields each statement, receives the rows it returned, and returns its answer."""


def many(sql: str, rows: Sequence[Sequence[Any]]) -> Query:
    """Return ``sql`` to run once per row of ``rows`` (nothing when there are none)."""
    return Query(sql, rows=rows, many=True)


def statements(*queries: Query) -> Talk[None]:
    """Return the conversation that runs ``queries`` in order and answers nothing."""
    for query in queries:
        _ = yield query  # (not yield from: the store sends each statement its rows)


def marks(count: int, first: int = 1) -> str:
    """Return ``$first, ..., $(first + count - 1)``: the parameters of an ``IN (...)`` list."""
    return ", ".join(f"${n}" for n in range(first, first + count))

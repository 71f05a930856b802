"""The scopes a credential can hold; each door needs exactly one."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Scope(StrEnum):
    """What a credential may do."""

    JOBS_WRITE = "jobs:write"  # submit and cancel jobs
    JOBS_READ = "jobs:read"  # read, list and stream jobs
    ADMIN = "admin"  # dead-letter replay and purge, breakers, the autoscaler's status
    METRICS_READ = "metrics:read"  # /metrics of the API and the autoscaler

    @classmethod
    def parse(cls, names: str) -> tuple[Scope, ...]:
        """Return the scopes named in ``names`` (space- or comma-separated)."""
        chosen: list[Scope] = []
        for name in names.replace(",", " ").split():
            try:
                scope = cls(name)
            except ValueError:
                known = ", ".join(s.value for s in cls)
                raise ValueError(f"unknown scope {name[:40]!r}; scopes: {known}") from None
            if scope not in chosen:
                chosen.append(scope)
        return tuple(chosen)

    @classmethod
    def known(cls, names: Iterable[object]) -> frozenset[Scope]:
        """Return the scopes among ``names``, ignoring names that are not scopes."""
        values = {s.value for s in cls}
        return frozenset(cls(n) for n in names if isinstance(n, str) and n in values)

"""The scopes a credential can hold (each door needs exactly one), and who a verified credential speaks for: its tenant, scopes and job types."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from producers.tenancy import Viewer
from topology.errors import PermissionDeniedError


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


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a verified API key or bearer token."""

    id: str  # stable per credential: the key id, or the token's issuer and subject
    scopes: frozenset[Scope]
    viewer: Viewer  # the tenant and job types it may touch
    name: str = ""  # what a person calls it: the key's name, or the token's subject

    @property
    def tenant(self) -> str:
        """Return the tenant whose jobs this caller submits and sees."""
        return self.viewer.tenant

    def require(self, scope: Scope) -> None:
        """Return if the credential holds ``scope``."""
        if scope not in self.scopes:
            raise PermissionDeniedError(
                f"this credential lacks the {scope.value} scope", scope=scope.value
            )

    def require_type(self, job_type: str) -> None:
        """Return if the credential may submit jobs of ``job_type``."""
        if not self.viewer.may_touch(job_type):
            patterns = ", ".join(self.viewer.job_types or ())
            raise PermissionDeniedError(
                f"this credential may only submit job types matching {patterns}"
            )

"""Who a verified credential speaks for: its tenant, scopes and job types."""

from __future__ import annotations

from dataclasses import dataclass

from producers.auth.scopes import Scope
from producers.tenancy import Viewer
from topology.errors import PermissionDeniedError


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

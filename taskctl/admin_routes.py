"""``/admin/dlq``: the dead-letter operations of ``taskctl dlq`` over HTTP, for the console.

Mounted into the job API by ``taskctl serve`` (the app assembly sits above ``consumers``).
Every route needs the ``admin`` scope, and touches only the caller's tenant's dead letters:
another tenant's letters are neither listed, replayed nor purged.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from consumers.dlq import DeadFilter, listing, purge, replay
from producers.api.app import Services
from producers.api.routes import StrictJsonRoute
from producers.api.security import principal, secured
from producers.auth.scopes import Scope
from producers.publisher import ConfirmedPublisher
from topology.durations import parse_duration
from topology.errors import BrokerUnavailableError, JobRejectedError
from topology.model import CompiledGroup

# Secured routes with the job routes' strict JSON bodies (a bad body is a 415 or a 422).
router = APIRouter(prefix="/admin/dlq", tags=["admin"], route_class=StrictJsonRoute)


class Filters(BaseModel):
    """Which dead letters an operation touches; every given condition must hold."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    type: str | None = None
    reason: str | None = None
    error: Annotated[
        str | None, Field(description="A regular expression searched in the last error.")
    ] = None
    older_than: Annotated[str | None, Field(description="A duration such as 1h or 2d.")] = None


class ReplayRequest(Filters):
    """A replay: filters (or ``all``) and a rate limit."""

    all: bool = False
    rate: Annotated[float, Field(gt=0, le=10_000)] = 50.0


class PurgeRequest(Filters):
    """A purge: filters, and ``confirm: true`` because it cannot be undone."""

    # JSON true only: "true", 1 or "yes" are not a confirmation of something irreversible.
    confirm: StrictBool = False


def _filter(f: Filters, tenant: str) -> DeadFilter:
    try:
        age = None if f.older_than is None else timedelta(milliseconds=parse_duration(f.older_than))
    except ValueError as exc:
        raise JobRejectedError(str(exc), field="older_than") from exc
    return DeadFilter(
        job_id=f.id, job_type=f.type, reason=f.reason, error=f.error, older_than=age, tenant=tenant
    )


def _publisher(services: Services) -> ConfirmedPublisher:
    if services.publisher is None:
        raise BrokerUnavailableError("the DLQ routes need the API's broker connection")
    return services.publisher


def _context(request: Request, group: str) -> tuple[Services, CompiledGroup]:
    services: Services = request.app.state.services
    try:
        return services, services.submitter.topology.group(group)
    except KeyError as exc:
        known = ", ".join(g.name for g in services.submitter.topology.groups)
        raise JobRejectedError(f"no group {group!r}; groups: {known}", field="group") from exc


@router.get(
    "/{group}",
    summary="List a group's dead letters (they stay in the DLQ)",
    **secured(Scope.ADMIN),
)
async def list_dead(
    request: Request, group: str, filters: Annotated[Filters, Query()]
) -> list[dict[str, Any]]:
    """Return the matching dead letters."""
    services, compiled = _context(request, group)
    chosen = _filter(filters, principal(request).tenant)
    letters = await listing(_publisher(services).connection, compiled, chosen)
    return [letter.view() for letter in letters]


@router.post(
    "/{group}/replay",
    summary="Send dead letters back to work, rate-limited",
    **secured(Scope.ADMIN),
)
async def replay_dead(request: Request, group: str, body: ReplayRequest) -> dict[str, int]:
    """Replay the matching dead letters (attempts reset, idempotency keys kept)."""
    services, compiled = _context(request, group)
    tenant = principal(request).tenant
    chosen = _filter(body, tenant)
    if chosen == DeadFilter(tenant=tenant) and not body.all:
        raise JobRejectedError("give a filter or all: true", field="all")
    publisher = _publisher(services)
    outcome = await replay(
        publisher.connection,
        services.submitter.topology,
        compiled,
        publisher,
        services.submitter.store,
        chosen,
        rate=body.rate,
    )
    return {"replayed": outcome.matched, "left": outcome.kept + outcome.skipped_undecodable}


@router.post("/{group}/purge", summary="Delete dead letters for good", **secured(Scope.ADMIN))
async def purge_dead(request: Request, group: str, body: PurgeRequest) -> dict[str, int]:
    """Delete the matching dead letters; needs ``confirm: true``."""
    services, compiled = _context(request, group)
    if not body.confirm:
        raise JobRejectedError("a purge cannot be undone: send confirm: true", field="confirm")
    chosen = _filter(body, principal(request).tenant)
    outcome = await purge(_publisher(services).connection, compiled, chosen)
    return {"purged": outcome.matched, "left": outcome.kept}

"""``/admin/dlq``: the dead-letter operations of ``taskctl dlq`` over HTTP, admin scope, the caller's tenant only, audited."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from consumers.dlq import MAX_FILTER_CHARS, PAGE, DeadFilter, listing, purge, replay
from producers.api.security import SecuredRoute, principal, secured
from producers.auth.principal import Scope
from taskctl.dlq_audit import audited, dead_letters_of
from topology.durations import parse_timedelta
from topology.errors import JobRejectedError

# Secured routes with the job routes' strict JSON bodies (a bad body is a 415 or a 422).
router = APIRouter(prefix="/admin/dlq", tags=["admin"], route_class=SecuredRoute)


Text = Annotated[str | None, Field(max_length=255)]


class Filters(BaseModel):
    """Which dead letters an operation touches; every given condition must hold."""

    model_config = ConfigDict(extra="forbid")

    id: Text = None
    type: Text = None
    reason: Text = None
    error: Annotated[
        str | None,
        Field(
            max_length=MAX_FILTER_CHARS,
            description="Text found in the last error (a plain substring, not a pattern).",
        ),
    ] = None
    older_than: Annotated[
        str | None, Field(max_length=32, description="A duration such as 1h or 2d.")
    ] = None


class ListQuery(Filters):
    """A listing: filters, a page size, and the cursor of the page before."""

    limit: Annotated[int, Field(ge=1, le=500)] = PAGE
    cursor: Annotated[str | None, Field(pattern=r"^[0-9a-f]{32}$")] = None


class ReplayRequest(Filters):
    """A replay: filters (or ``all: true``) and a rate limit."""

    all: StrictBool = False
    rate: Annotated[float, Field(gt=0, le=10_000)] = 50.0


class PurgeRequest(Filters):
    """A purge: filters, and ``confirm: true`` (the JSON literal) because it cannot be undone."""

    confirm: Annotated[
        StrictBool,
        Field(description="Must be the JSON literal true; strings and numbers are refused."),
    ] = False


def _filter(f: Filters, tenant: str) -> DeadFilter:
    try:
        older = parse_timedelta(f.older_than)
    except ValueError as exc:
        raise JobRejectedError(str(exc), field="older_than") from exc
    return DeadFilter(
        job_id=f.id,
        job_type=f.type,
        reason=f.reason,
        error=f.error,
        older_than=older,
        tenant=tenant,
    )


@router.get(
    "/{group}",
    summary="List a group's dead letters, a page at a time (they stay)",
    **secured(Scope.ADMIN),
)
async def list_dead(
    request: Request, group: str, query: Annotated[ListQuery, Query()]
) -> dict[str, Any]:
    """Return a page of matching dead letters and the cursor of the next page (null at the end)."""
    compiled, publisher = dead_letters_of(request.app.state.services, group)
    chosen = _filter(query, principal(request).tenant)
    page = await listing(
        publisher.connection, compiled, chosen, limit=query.limit, cursor=query.cursor
    )
    return {"letters": [letter.view() for letter in page.letters], "next_cursor": page.cursor}


@router.post(
    "/{group}/replay",
    summary="Send dead letters back to work, rate-limited",
    **secured(Scope.ADMIN),
)
async def replay_dead(request: Request, group: str, body: ReplayRequest) -> dict[str, int]:
    """Replay the matching dead letters (attempts reset, idempotency keys kept)."""
    compiled, publisher = dead_letters_of(request.app.state.services, group)
    caller = principal(request)
    chosen = _filter(body, caller.tenant)
    if chosen == DeadFilter(tenant=caller.tenant) and not body.all:
        raise JobRejectedError("give a filter or all: true", field="all")
    submitter = request.app.state.services.submitter
    topology, store = submitter.topology, submitter.store
    run = partial(
        replay, publisher.connection, topology, compiled, publisher, store, chosen, rate=body.rate
    )
    outcome = await audited(store, caller, group, "replay", chosen, run, rate=body.rate)
    return {"replayed": outcome.matched, "left": outcome.kept}


@router.post("/{group}/purge", summary="Delete dead letters for good", **secured(Scope.ADMIN))
async def purge_dead(request: Request, group: str, body: PurgeRequest) -> dict[str, int]:
    """Delete the matching dead letters; needs ``confirm: true``."""
    compiled, publisher = dead_letters_of(request.app.state.services, group)
    if not body.confirm:
        raise JobRejectedError("a purge cannot be undone: send confirm: true", field="confirm")
    caller = principal(request)
    chosen = _filter(body, caller.tenant)
    store = request.app.state.services.submitter.store
    run = partial(purge, publisher.connection, compiled, chosen)
    outcome = await audited(store, caller, group, "purge", chosen, run)
    return {"purged": outcome.matched, "left": outcome.kept}

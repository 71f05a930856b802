"""The dead-letter pages: browse a group's DLQ, inspect a letter, replay or purge, all audited."""

from __future__ import annotations

from functools import partial
from urllib.parse import urlencode

from starlette.responses import Response

from consumers.dispatch import DeadReason
from consumers.dlq import MAX_FILTER_CHARS, DeadFilter, listing, purge, replay
from producers.publisher import ConfirmedPublisher
from taskctl.console.sessions import PATH
from taskctl.console.web import MAX_TEXT, Visit, local_path, redirect
from taskctl.dlq_audit import audited, dead_letters_of
from topology.compiled import CompiledGroup
from topology.durations import parse_timedelta
from topology.errors import JobRejectedError

PAGE = 50
MAX_RATE = 10_000.0
FILTERS = ("type", "reason", "error", "older_than")
MAX_CHOSEN = 500  # letters replayed or purged by hand at once


def _group(visit: Visit) -> tuple[CompiledGroup, ConfirmedPublisher]:
    return dead_letters_of(visit.services, visit.request.path_params["group"])


def _filter(visit: Visit, verb: str | None = None) -> DeadFilter:
    """Return the letters the form picks: those ticked to ``verb`` (unless it asks for all), else its filters."""
    tenant = visit.caller.tenant
    if verb is not None and visit.field("all") is None:
        ids = visit.fields("id")
        if not ids:
            raise JobRejectedError(
                f"tick the letters to {verb}, or {verb} all matching", field="id"
            )
        if len(ids) > MAX_CHOSEN:
            raise JobRejectedError(f"choose at most {MAX_CHOSEN} letters at once", field="id")
        return DeadFilter(job_ids=frozenset(ids), tenant=tenant)
    try:
        older = parse_timedelta(visit.field("older_than", 32))
    except ValueError as exc:
        raise JobRejectedError(f"older_than: {exc}", field="older_than") from exc
    return DeadFilter(
        job_type=visit.field("type", MAX_TEXT),
        reason=visit.field("reason", MAX_TEXT),
        error=visit.field("error", MAX_FILTER_CHARS),
        older_than=older,
        tenant=tenant,
    )


async def groups(visit: Visit) -> Response:
    """List the groups whose DLQs can be browsed."""
    return visit.page("dlq_groups.html", groups=visit.services.submitter.topology.groups)


async def letters(visit: Visit) -> Response:
    """Show a page of a group's matching dead letters, and its latest replays and purges."""
    group, publisher = _group(visit)
    chosen = _filter(visit)
    cursor = visit.field("cursor", 32)
    page = await listing(publisher.connection, group, chosen, limit=PAGE, cursor=cursor)
    audit = await visit.services.submitter.store.list_audit(visit.caller.tenant, group.name)
    query = {name: value for name in FILTERS if (value := visit.field(name)) is not None}
    next_url = None
    if page.cursor is not None:
        next_url = f"{PATH}/dlq/{group.name}?{urlencode({**query, 'cursor': page.cursor})}"
    return visit.page(
        "dlq.html",
        group=group,
        letters=page.letters,
        query=query,
        audit=audit,
        next_url=next_url,
        reasons=[reason.value for reason in DeadReason],
    )


async def letter(visit: Visit) -> Response:
    """Show one dead letter: why it died, its last error, its job as the message carries it."""
    group, publisher = _group(visit)
    job_id = visit.request.path_params["job_id"]
    chosen = DeadFilter(job_id=job_id, tenant=visit.caller.tenant)
    found = (await listing(publisher.connection, group, chosen, limit=1)).letters
    if not found:
        return visit.page(
            "error.html", 404, message=f"no dead letter of job {job_id} in {group.name}"
        )
    return visit.page("letter.html", group=group, letter=found[0])


def _rate(visit: Visit) -> float:
    text = visit.field("rate") or "50"
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not 0 < rate <= MAX_RATE:
        raise JobRejectedError(
            f"rate: a number of replays per second, up to {MAX_RATE:g}", field="rate"
        )
    return rate


async def replay_letters(visit: Visit) -> Response:
    """Replay the ticked letters, or all matching the filters, at the chosen rate; audited."""
    group, publisher = _group(visit)
    chosen = _filter(visit, "replay")
    rate = _rate(visit)
    submitter = visit.services.submitter
    store, topology = submitter.store, submitter.topology
    run = partial(
        replay, publisher.connection, topology, group, publisher, store, chosen, rate=rate
    )
    await audited(store, visit.caller, group.name, "replay", chosen, run, rate=rate)
    return redirect(_back(visit, group))


async def purge_letters(visit: Visit) -> Response:
    """Delete the ticked letters, or all matching the filters, once the group's name is typed."""
    group, publisher = _group(visit)
    if visit.field("confirm") != group.name:
        raise JobRejectedError(
            f"a purge cannot be undone: type the group's name ({group.name}) to confirm",
            field="confirm",
        )
    chosen = _filter(visit, "purge")
    store = visit.services.submitter.store
    run = partial(purge, publisher.connection, group, chosen)
    await audited(store, visit.caller, group.name, "purge", chosen, run)
    return redirect(_back(visit, group))


def _back(visit: Visit, group: CompiledGroup) -> str:
    """Return where the form asked to go after it (a console path), else the group's audit."""
    return local_path(visit.field("back"), f"{PATH}/dlq/{group.name}#audit")

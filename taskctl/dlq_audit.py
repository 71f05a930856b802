"""Dead-letter replays and purges, audited: who started one, when, on what, and what it did."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from consumers.dlq import DeadFilter, Outcome
from jobstore.model import AuditEntry, JobStore
from producers.auth.principal import Principal, Scope
from producers.tenancy import Viewer
from topology.durations import format_duration
from topology.envelope import new_job_id
from topology.errors import BrokerUnavailableError, JobRejectedError, UnknownGroupError
from topology.limits import excerpt

if TYPE_CHECKING:
    from producers.api.app import Services
    from producers.publisher import ConfirmedPublisher
    from topology.compiled import CompiledGroup

MAX_TARGET_CHARS = 1000  # a replay of many hand-picked ids is named by its first ones
_MS = timedelta(milliseconds=1)


def operator() -> Principal:
    """Return who runs ``taskctl dlq`` on this machine, as its audit names them."""
    user = getpass.getuser()
    # The command line speaks for every tenant; its operations are listed with the default one's.
    return Principal(f"cli:{user}@{socket.gethostname()}", frozenset({Scope.ADMIN}), Viewer(), user)


def dead_letters_of(services: Services, group: str) -> tuple[CompiledGroup, ConfirmedPublisher]:
    """Return ``group`` of the API's topology and the publisher that works on its DLQ."""
    try:
        compiled = services.submitter.topology.group(group)
    except UnknownGroupError as exc:
        raise JobRejectedError(str(exc), field="group") from exc
    if services.publisher is None:
        raise BrokerUnavailableError("dead letters need the API's broker connection")
    return compiled, services.publisher


def describe(chosen: DeadFilter) -> str:
    """Return which dead letters ``chosen`` picks, as the audit shows it."""
    named = (("id", chosen.job_id), ("type", chosen.job_type), ("reason", chosen.reason))
    parts = [f"{label} {value}" for label, value in named if value is not None]
    if chosen.job_ids is not None:
        parts.append(f"{len(chosen.job_ids)} chosen: {', '.join(sorted(chosen.job_ids))}")
    if chosen.error is not None:
        parts.append(f"error containing {excerpt(chosen.error)}")
    if chosen.older_than is not None:
        parts.append(f"older than {format_duration(chosen.older_than // _MS)}")
    text = "; ".join(parts) or "all"
    return text if len(text) <= MAX_TARGET_CHARS else text[: MAX_TARGET_CHARS - 1] + "…"


async def audited(
    store: JobStore,
    caller: Principal,
    group: str,
    action: Literal["replay", "purge"],
    chosen: DeadFilter,
    run: Callable[[], Awaitable[Outcome]],
    *,
    rate: float | None = None,
) -> Outcome:
    """Record the operation, ``run`` it, then record what it did (or the error that stopped it)."""
    entry = AuditEntry(
        id=new_job_id(),
        at=datetime.now(UTC),
        actor=caller.id,
        actor_name=caller.name,
        tenant=caller.tenant,
        group=group,
        action=action,
        target=describe(chosen),
        rate=rate,
    )
    # Written first: an operation that dies halfway still shows who started it, and on what.
    await store.record_audit(entry)
    try:
        outcome = await run()
    except Exception as exc:
        error = str(exc)[:MAX_TARGET_CHARS]
        failed = replace(entry, error=error, finished_at=datetime.now(UTC))
        await store.record_audit(failed)
        raise
    done = replace(entry, matched=outcome.matched, kept=outcome.kept, finished_at=datetime.now(UTC))
    await store.record_audit(done)
    return outcome

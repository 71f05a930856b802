"""Sealed jobs in the store: results opened for readers, and re-sealing under the current data key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import orjson

from jobstore.model import DataChange, JobRecord, JobSearch, JobStore
from jobstore.workflows import StepOutcome
from topology.errors import ContractError
from topology.sealing import Sealer, token_of

Stored = TypeVar("Stored", JobRecord, StepOutcome)


def opened(stored: Stored, sealer: Sealer) -> Stored:
    """Return a job (or a workflow step's outcome) with its result opened, if it is stored sealed (ContractError if it does not open)."""
    token = token_of(stored.result)
    if token is None:
        return stored
    job_id = stored.id if isinstance(stored, JobRecord) else stored.job_id
    return replace(stored, result=orjson.loads(sealer.open(job_id, token, "result")))


@dataclass(slots=True)
class ResealReport:
    """What a re-sealing pass did: rows read, values re-sealed, and those it could not open."""

    jobs: int = 0
    resealed: int = 0
    failed: int = 0  # values that did not open (an unknown key, or altered)
    unreadable: list[str] = field(default_factory=list)  # "job id: why", the first 100


async def reseal_jobs(
    store: JobStore,
    sealer: Sealer,
    *,
    batch: int = 500,
    progress: Callable[[ResealReport], None] | None = None,
) -> ResealReport:
    """Seal every stored payload and result under the current key (clear ones too), ``batch`` jobs a write."""
    if not sealer.enabled or batch < 1:
        raise ValueError("re-sealing needs a data key and a batch of at least 1")
    report = ResealReport()
    cursor: str | None = None
    while True:
        page = await store.list_jobs(JobSearch(limit=batch, cursor=cursor))
        changes = [c for job in page.jobs for c in _changes(job, sealer, report)]
        if changes:
            await store.replace_data(changes)
        report.jobs += len(page.jobs)
        report.resealed += len(changes)
        if progress is not None:
            progress(report)
        cursor = page.next_cursor
        if cursor is None:
            return report


def _changes(job: JobRecord, sealer: Sealer, report: ResealReport) -> list[DataChange]:
    changes = []
    columns: tuple[Literal["payload", "result"], ...] = ("payload", "result")
    for column in columns:
        value: Any = getattr(job, column)
        if value is None:
            continue
        token = token_of(value)
        if token is not None and token.partition(":")[0] == sealer.current:
            continue  # sealed under the current key already
        try:
            data = orjson.dumps(value) if token is None else sealer.open(job.id, token, column)
        except ContractError as exc:
            report.failed += 1
            if len(report.unreadable) < 100:
                report.unreadable.append(f"{job.id}: {exc}")
            continue
        changes.append(DataChange(job.id, column, value, sealer.seal_value(job.id, data, column)))
    return changes

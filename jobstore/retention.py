"""The retention sweep: finished jobs past their retention, their blobs, and orphaned blobs, removed a bounded step at a time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from loguru import logger

from jobstore.blobs import BlobStore
from jobstore.model import JobStore, KeptFor
from telemetry.metrics import MetricSet, counter
from topology.errors import TaskqError

SWEEP_BATCH = 500  # jobs deleted, and blobs listed, per step
PASS_STEPS = 4  # steps of one background pass; the next pass goes on where it stopped
DELETES_AT_ONCE = 4


class RetentionMetrics(MetricSet):
    """What the retention sweep removed."""

    jobs = counter(
        "taskq_retention_jobs_removed", "Finished jobs the retention sweep deleted from the store."
    )
    blobs = counter(
        "taskq_retention_blobs_removed",
        "Blobs the retention sweep deleted: an expired job's, or orphaned (no job has it).",
        "reason",
    )


@dataclass(slots=True)
class SweepReport:
    """What a sweep removed so far: jobs, their blobs, and orphaned blobs."""

    jobs: int = 0
    blobs: int = 0
    orphans: int = 0


class RetentionSweep:
    """Removes finished jobs past ``kept_for``, their blobs, and blobs no job has (older than ``grace`` seconds)."""

    def __init__(
        self,
        store: JobStore,
        blobs: BlobStore,
        kept_for: KeptFor,
        *,
        grace: float,
        batch: int = SWEEP_BATCH,
        metrics: RetentionMetrics | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._kept_for = kept_for
        # A submission writes its blob before its job: a blob younger than this may be one.
        self._grace = timedelta(seconds=grace)
        self._batch = batch
        self._metrics = metrics or RetentionMetrics()
        self._after = ""  # the orphan scan goes on after this blob key ("": from the start)

    async def step(self, report: SweepReport) -> bool:
        """Delete one batch of expired jobs and check one page of blobs; return whether more may be due."""
        page = await self._blobs.scan(after=self._after, limit=self._batch)
        self._after = page[-1].key if len(page) == self._batch else ""
        old = datetime.now(UTC) - self._grace
        stale = {blob.job_id: blob.uri for blob in page if blob.written_at < old}
        swept = await self._store.sweep(self._kept_for, limit=self._batch, ask=list(stale))
        expired = set(swept.blobs)
        orphans = [stale[job_id] for job_id in swept.unknown if stale[job_id] not in expired]
        report.jobs += swept.jobs
        report.blobs += await self._delete(swept.blobs, "expired")
        report.orphans += await self._delete(orphans, "orphaned")
        self._metrics.jobs.inc(swept.jobs)
        return swept.jobs == self._batch or bool(self._after)

    async def sweep(
        self, *, steps: int | None = None, progress: Callable[[SweepReport], None] | None = None
    ) -> SweepReport:
        """Step until nothing more is due (or ``steps`` steps), yielding to other work in between."""
        report = SweepReport()
        for _ in itertools.count() if steps is None else range(steps):
            more = await self.step(report)
            if progress is not None:
                progress(report)
            if not more:
                break
            await asyncio.sleep(0)  # requests go first
        return report

    async def keep_sweeping(self, interval: float) -> None:
        """Sweep ``PASS_STEPS`` steps every ``interval`` seconds until cancelled (the API process does)."""
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.sweep(steps=PASS_STEPS)
            except TaskqError as exc:  # the store or the blob store is down: the next pass tries
                logger.warning("retention sweep failed: {}", exc)
            except Exception as exc:  # a bug must not end the sweeps for the process's life
                logger.opt(exception=exc).error("retention sweep failed unexpectedly")
            else:
                if report.jobs or report.blobs or report.orphans:
                    logger.info(
                        "retention sweep removed {} jobs, {} of their blobs, {} orphaned blobs",
                        report.jobs,
                        report.blobs,
                        report.orphans,
                    )

    async def _delete(self, uris: Sequence[str], reason: str) -> int:
        """Delete the blobs at ``uris``; return how many went (one that did not is an orphan now)."""
        outcomes: list[object] = []
        # A few at a time: the blob stores' threads are shared with the requests' blob writes.
        for start in range(0, len(uris), DELETES_AT_ONCE):
            chunk = uris[start : start + DELETES_AT_ONCE]
            outcomes += await asyncio.gather(
                *map(self._blobs.delete, chunk), return_exceptions=True
            )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for error in failed:
            if not isinstance(error, TaskqError):
                raise error
        if failed:
            logger.warning(
                "retention sweep: {} blobs not deleted, left to the orphan scan: {}",
                len(failed),
                failed[0],
            )
        self._metrics.blobs.labels(reason).inc(len(uris) - len(failed))
        return len(uris) - len(failed)

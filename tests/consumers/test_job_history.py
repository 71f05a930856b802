"""A job's history as a worker and a DLQ replay record it, on the real broker."""

from __future__ import annotations

import pytest

from consumers.dlq import DeadFilter, replay
from consumers.handlers import JobContext
from jobstore.model import JobEventKind, JobStatus
from tests.consumers.rig import TOPOLOGY, Rig
from topology.broker import connect

pytestmark = pytest.mark.rabbitmq


async def test_failed_attempts_the_dead_letter_and_the_replay_are_each_a_step(rig: Rig):
    fail = {"on": True}

    @rig.registry.handler("mail.history")
    async def flaky(payload, ctx: JobContext) -> str:
        rig.runs.append(ctx.job_id)
        if fail["on"]:
            raise ConnectionError(f"attempt {ctx.attempt} refused")
        return "ok"

    job_id = await rig.submit("mail.history", {"to": "a@example.com"})
    await rig.until(job_id, JobStatus.DEAD)
    fail["on"] = False
    connection = await connect(rig.settings, name="history test")
    async with connection:
        await replay(
            connection,
            TOPOLOGY,
            TOPOLOGY.group("mail"),
            rig.publisher,
            rig.store,
            DeadFilter(job_id=job_id),
        )
    await rig.until(job_id, JobStatus.SUCCEEDED)
    steps = await rig.store.list_events(job_id)
    assert [(s.kind, s.attempt) for s in steps] == [
        (JobEventKind.RETRIED, 1),
        (JobEventKind.RETRIED, 2),
        (JobEventKind.DEAD, 3),
        (JobEventKind.REPLAYED, 3),
    ]
    first, second, dead, replayed = steps
    assert first.error == "ConnectionError: attempt 1 refused"
    # No jitter: 250 ms then 500 ms, each through the tier that fits it.
    assert (first.delay_ms, second.delay_ms) == (250, 500)
    assert (first.tier, second.tier) == ("250ms", "500ms")
    assert all(s.took_ms is not None and 0 <= s.took_ms < 2000 for s in (first, second, dead))
    assert (dead.reason, dead.delay_ms, dead.tier) == ("exhausted", None, None)
    assert replayed.reason == "exhausted"
    assert replayed.error is None
    # A success is on the job's row, not a step; the replay started its count of runs anew
    # (else the poison bound would take a job that used its attempts for one that crashes).
    job = await rig.store.get_job(job_id)
    assert job is not None
    assert (job.attempts, job.started_at is not None) == (1, True)

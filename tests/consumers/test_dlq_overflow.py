"""A full DLQ on the real broker refuses a dead letter; the job waits on its work queue, never lost."""

from __future__ import annotations

import pytest

from consumers.handlers import JobContext, Permanent
from jobstore.model import JobStatus
from tests.broker import channel, depth, next_message
from tests.consumers.rig import started
from tests.helpers import compiled, eventually
from topology.envelope import decode

pytestmark = pytest.mark.rabbitmq

TINY_DLQ = compiled(
    """
    delays: {resolution: 250ms, longest: 1m}
    groups:
      mail:
        jobs: ["mail.#"]
        timeout: 2s
        retry: {max_attempts: 1, base: 250ms, factor: 2, max: 1s, jitter: none}
        dlq: {max_length: 1}
    """
)


async def test_a_dead_letter_the_full_dlq_refuses_stays_on_its_work_queue(vhost):
    async with started(vhost, TINY_DLQ) as rig:

        @rig.registry.handler("mail.doomed")
        async def doomed(payload: object, ctx: JobContext) -> None:
            rig.runs.append(ctx.job_id)
            raise Permanent("no such mailbox")

        first = await rig.submit("mail.doomed")
        await rig.until(first, JobStatus.DEAD)
        second = await rig.submit("mail.doomed")

        async def refused() -> bool:
            job = await rig.store.get_job(second)
            return job is not None and "PublishNackedError" in (job.last_error or "")

        await eventually(refused, within=15, every=0.05)
        # Tried again, and still not dead nor acked away: the DLQ holds only the first.
        await eventually(lambda: _ran_twice(rig.runs, second), within=15, every=0.05)
        assert await rig.status(second) is not JobStatus.DEAD
        async with channel(rig.settings) as ch:
            assert await depth(ch, "taskq.mail.dlq") == 1
            dlq = await ch.get_queue("taskq.mail.dlq", ensure=False)
            await dlq.purge()  # room again
        await rig.until(second, JobStatus.DEAD)
        async with channel(rig.settings) as ch:
            letter = await next_message(ch, "taskq.mail.dlq")
            assert await depth(ch, "taskq.mail") == 0
        assert decode(letter.body).id == second


async def _ran_twice(runs: list[str], job_id: str) -> bool:
    return runs.count(job_id) >= 2

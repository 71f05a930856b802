"""A delivery the worker cannot carry out goes back to its queue later each time, not in a hot loop."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import pytest

from consumers.handlers import JobContext
from consumers.worker import requeue_pause
from jobstore.model import RunEnd, RunJob, RunStart, RunStarted
from tests.consumers.rig import started
from tests.helpers import compiled, eventually
from topology.errors import StoreUnavailableError

QUORUM = compiled(
    """
    delays: {resolution: 250ms, longest: 1m}
    groups:
      mail: {jobs: ["mail.#"], timeout: 2s, priority: {strategy: lanes, queue_type: quorum}}
    """
)


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        (None, 0.5),  # a classic queue counts nothing: always the least
        ({}, 0.5),
        ({"x-delivery-count": 1}, 1.0),
        ({"x-delivery-count": 3}, 4.0),
        ({"x-delivery-count": 6}, 30.0),
        ({"x-delivery-count": 10**6}, 30.0),
        ({"x-delivery-count": "7"}, 0.5),  # not a count
    ],
)
def test_the_pause_doubles_with_the_delivery_count_up_to_30s(headers, pause):
    assert requeue_pause(headers) == pause


@pytest.mark.rabbitmq
async def test_a_quorum_delivery_the_store_refuses_waits_longer_before_each_requeue(
    vhost, monkeypatch: pytest.MonkeyPatch
):
    async with started(vhost, QUORUM) as rig:

        @rig.registry.handler("mail.send")
        async def send(payload, ctx: JobContext) -> None:
            rig.runs.append(ctx.job_id)

        tries: list[float] = []
        write = rig.store.run_window

        async def run_window(
            ends: Sequence[RunEnd], starts: Sequence[RunStart]
        ) -> tuple[list[RunJob | None], list[RunStarted]]:
            if starts:
                tries.append(time.monotonic())
                # Down for the first three deliveries; a window that fails tries its starts twice.
                if len(tries) <= 6:
                    raise StoreUnavailableError("the store is down")
            return await write(ends, starts)

        monkeypatch.setattr(rig.store, "run_window", run_window)
        job_id = await rig.submit("mail.send")

        async def ran() -> bool:
            return rig.runs == [job_id]

        await eventually(ran, within=10, every=0.05)
    deliveries = tries[::2]
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(deliveries)]
    # 0.5 s, then doubling with the queue's x-delivery-count.
    assert len(gaps) == 3
    for gap, pause in zip(gaps, (0.5, 1.0, 2.0), strict=True):
        assert pause <= gap < pause + 0.5, gaps

"""Every failure that repeats on redelivery ends in the DLQ with its reason, after a bounded number of tries.

On the real broker: a store that refuses a value the run produced, a broker that refuses a
header the job carries, and a handler that crashes its worker process. Each try is a start
counted in the job's row (it survives the crash); the rig's bound is 3 restarts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from consumers.dispatch import REASON_HEADER
from consumers.handlers import JobContext, Retry
from jobstore.model import JobStatus, RunEnd, RunJob, RunStart, RunStarted
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest
from tests.broker import channel, next_message
from tests.consumers.rig import Rig
from tests.consumers.test_worker_process import env, statuses, submit_all  # noqa: F401 (a fixture)
from tests.fakes.store import InMemoryJobStore
from tests.helpers import eventually
from topology.envelope import Envelope, decode
from topology.errors import ContractError, StoreError
from topology.routes import Route

pytestmark = pytest.mark.rabbitmq

BOUND = 3  # the rig's poison_deliveries


def refuse_nul(store: InMemoryJobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``store`` refuse to record a result holding NUL, as PostgreSQL refuses it in text."""
    write = store.run_window

    async def run_window(
        ends: Sequence[RunEnd], starts: Sequence[RunStart]
    ) -> tuple[list[RunJob | None], list[RunStarted]]:
        if any("\x00" in str(end.result) for end in ends if end.result is not None):
            raise StoreError("payload strings may not contain NUL")
        return await write(ends, starts)

    monkeypatch.setattr(store, "run_window", run_window)


def refuse_header(
    publisher: ConfirmedPublisher, refused: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make every publish of the jobs in ``refused`` fail as a header AMQP cannot carry does."""
    encode = publisher._outgoing

    def outgoing(envelope: Envelope, target: Route) -> Any:
        if envelope.id in refused:
            raise ContractError("header taskq-note is longer than 255 bytes")
        return encode(envelope, target)

    monkeypatch.setattr(publisher, "_outgoing", outgoing)


async def test_a_value_the_store_refuses_ends_in_the_dlq_within_the_bound(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
):
    refuse_nul(rig.store, monkeypatch)

    @rig.registry.handler("mail.nul")
    async def nul(payload, ctx: JobContext) -> str:
        rig.runs.append(ctx.job_id)
        return "\x00" if payload == "bad" else "fine"

    bad = await rig.submit("mail.nul", "bad")
    good = await rig.submit("mail.nul", "good")
    await rig.until(bad, JobStatus.DEAD, within=30)
    await rig.until(good, JobStatus.SUCCEEDED)
    assert rig.runs.count(bad) == BOUND  # the first try, and restarts up to the bound
    assert rig.runs.count(good) == 1  # its window-mate was written alone, once
    job = await rig.store.get_job(bad)
    assert job is not None
    assert job.last_error is not None
    assert job.last_error.endswith("last error: StoreError: payload strings may not contain NUL")
    async with channel(rig.settings) as ch:
        dead = await next_message(ch, "taskq.mail.dlq")
    assert decode(dead.body).id == bad
    assert dead.headers[REASON_HEADER] == "poison"


async def test_a_header_the_broker_refuses_ends_in_the_dlq_within_the_bound(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
):
    refused: set[str] = set()
    refuse_header(rig.publisher, refused, monkeypatch)

    @rig.registry.handler("mail.header")
    async def header(payload, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)
        refused.add(ctx.job_id)  # its retry hop, and its dead letter, are refused
        raise Retry("once more", delay=0.1)

    job_id = await rig.submit("mail.header")
    await rig.until(job_id, JobStatus.DEAD, within=30)
    assert len(rig.runs) == BOUND
    async with channel(rig.settings) as ch:
        dead = await next_message(ch, "taskq.mail.dlq")
    # Even the dead letter was refused: the queue dead-lettered the original as it was.
    assert decode(dead.body).id == job_id
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    job = await rig.store.get_job(job_id)
    assert job is not None
    assert job.last_error == "ContractError: header taskq-note is longer than 255 bytes"


def start_worker(environ: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "taskctl", "worker", "mail"],
        env={**os.environ, **environ, "TASKQ_POISON_DELIVERIES": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_a_job_that_crashes_its_worker_process_ends_in_the_dlq_within_the_bound(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
    vhost,
):
    (job_id,) = await submit_all(env, [JobRequest(type="mail.crash", payload={"crash": True})])
    crashes = 0
    worker = start_worker(env)
    try:
        # Restart the worker whenever the job kills it, as a supervisor would. After a crash
        # the job's claim holds until its lease ends; then the next start counts.
        async def dead() -> bool:
            nonlocal worker, crashes
            if worker.poll() is not None:
                await asyncio.to_thread(worker.communicate)
                crashes += 1
                worker = start_worker(env)
            return (await statuses(env, [job_id])) == [JobStatus.DEAD]

        await eventually(dead, within=60, every=0.5)
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.communicate, timeout=30)
    assert crashes == 2  # the bound: two restarts, then the third start dead-letters it
    assert (tmp_path / "sink.txt").read_text().split() == [job_id, job_id]
    async with channel(vhost) as ch:
        letter = await next_message(ch, "taskq.mail.dlq")
    assert decode(letter.body).id == job_id
    assert letter.headers[REASON_HEADER] == "poison"

"""The no-op job as a taskq handler (``TASKQ_HANDLERS=noop.taskq_jobs``) and its submitter.

Worker: ``taskctl worker email``; producer: ``python -m noop.taskq_jobs`` submits
``BENCH_JOBS`` email jobs with ``AsyncClient.submit_many`` (windows of 500), so the job store
holds each one as a client's submission would; ``python -m noop.taskq_jobs verify`` fails
unless the store says every job succeeded.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from consumers.handlers import JobContext, handler
from jobstore.model import JobStatus
from noop.record import Completions, payload
from producers.client import AsyncClient
from producers.submit import JobRequest

WINDOW = 500

completions = Completions.from_env()


@handler("email.#")
async def noop(job: dict[str, Any], ctx: JobContext) -> None:
    completions.tick(job)


async def enqueue() -> None:
    jobs = int(os.environ["BENCH_JOBS"])
    async with await AsyncClient.connect() as client:
        for start in range(0, jobs, WINDOW):
            requests = [
                JobRequest(type="email", payload=payload(seq))
                for seq in range(start, min(jobs, start + WINDOW))
            ]
            for outcome in await client.submit_many(requests):
                if not isinstance(outcome, dict):
                    raise outcome


async def verify() -> None:
    async with await AsyncClient.connect() as client:
        for status in JobStatus:
            page = await client.list(status=status, limit=1)
            if status is not JobStatus.SUCCEEDED and page["jobs"]:
                raise SystemExit(f"job {page['jobs'][0]['id']} is {status}, not succeeded")
            if status is JobStatus.SUCCEEDED and not page["jobs"]:
                raise SystemExit("no job succeeded")


if __name__ == "__main__":
    asyncio.run(verify() if sys.argv[1:] == ["verify"] else enqueue())

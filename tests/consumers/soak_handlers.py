"""The handler the kill soak test loads through TASKQ_HANDLERS: it logs each run's start and effect."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import time

from consumers.handlers import JobContext, handler


@functools.cache
def _sink() -> int:
    # One O_APPEND descriptor per process: every write lands whole at the end of the file,
    # whichever worker process (or a killed one's last write) got there first.
    return os.open(os.environ["TASKQ_SOAK_SINK"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def log_event(event: str, job_id: str) -> None:
    """Append ``<event> <job id> <pid> <time ns>`` to the sink in a single write."""
    os.write(_sink(), f"{event} {job_id} {os.getpid()} {time.time_ns()}\n".encode())


@handler("soak.#")
async def soak(payload: dict, ctx: JobContext) -> str:
    """Log the start, sleep a random while within ``payload["sleep"]``, then log the effect."""
    log_event("start", ctx.job_id)
    low, high = payload["sleep"]
    await asyncio.sleep(random.uniform(low, high))
    log_event("effect", ctx.job_id)
    return "done"

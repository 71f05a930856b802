"""Handlers the worker-process tests load through TASKQ_HANDLERS: effects go to a sink file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from consumers.handlers import JobContext, handler


@handler("mail.#")
async def record(payload: dict, ctx: JobContext) -> str:
    """Sleep as asked, then append the job id to the sink (an append-only effect log).

    With ``crash`` in the payload, the process dies right after the effect, as a segfault would.
    """
    await asyncio.sleep(float(payload.get("sleep", 0)))
    await asyncio.to_thread(_append, Path(os.environ["TASKQ_TEST_SINK"]), ctx.job_id)
    if payload.get("crash"):
        os._exit(70)
    return "recorded"


def _append(sink: Path, line: str) -> None:
    with sink.open("a") as file:
        file.write(line + "\n")

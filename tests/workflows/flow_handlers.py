"""Handlers the workflow process tests load through TASKQ_HANDLERS: each run appends to a sink file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from consumers.handlers import JobContext, Permanent, handler


def _note(line: str) -> None:
    with Path(os.environ["TASKQ_TEST_SINK"]).open("a") as sink:
        sink.write(line + "\n")


@handler("flow.member")
async def member(payload: dict, ctx: JobContext) -> int:
    """Double ``n``; ``flaky`` fails the first attempt, ``die`` dead-letters the job."""
    await asyncio.sleep(float(payload.get("sleep", 0.005)))
    if payload.get("die"):
        raise Permanent(f"member {payload['n']} dies")
    if payload.get("flaky") and ctx.attempt == 1:
        raise RuntimeError(f"member {payload['n']} fails its first attempt")
    await asyncio.to_thread(_note, f"member {ctx.job_id}")
    return int(payload["n"]) * 2


@handler("flow.merge")
async def merge(payload: object, ctx: JobContext) -> dict:
    """Sum the chord's results (a dead member's is None) and note the run."""
    results = ctx.results
    await asyncio.to_thread(_note, f"merge {ctx.job_id} {len(results)}")
    return {"sum": sum(r for r in results if r is not None), "members": len(results)}


@handler("flow.add")
async def add(payload: dict, ctx: JobContext) -> int:
    """Return the previous step's result plus one (a chain counts its steps)."""
    await asyncio.sleep(float(payload.get("sleep", 0.02)))
    await asyncio.to_thread(_note, f"add {ctx.job_id}")
    return int(ctx.previous or 0) + 1

"""A handler the console's browser test loads through TASKQ_HANDLERS: it fails until told not to."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from consumers.handlers import JobContext, Permanent, handler


@handler("job.flaky")
async def flaky(payload: dict, ctx: JobContext) -> dict[str, str]:
    """Give up at once (to the DLQ) until the file TASKQ_TEST_FIXED names exists; then succeed."""
    fixed = await asyncio.to_thread(Path(os.environ["TASKQ_TEST_FIXED"]).exists)
    if payload.get("always") or not fixed:
        raise Permanent("the upstream answered 500 (password=hunter2)")
    return {"fixed": "yes"}

"""A scheduler replica on a clock running ``TASKQ_TEST_CLOCK_SPEED`` times the wall clock's pace.

Every replica of a test counts from the same wall-clock instant (``TASKQ_TEST_CLOCK_START``),
so they agree on the time: minutes of once-a-second schedules pass in seconds.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime

from producers.scheduler import Clock
from taskctl.assembly import run_scheduler
from telemetry.logs import configure_logging
from topology.settings import load_settings


def compressed(start: float, speed: float) -> Clock:
    """Return a clock that runs ``speed`` times faster than the wall clock from ``start``."""

    def now() -> datetime:
        return datetime.fromtimestamp(start + (time.time() - start) * speed, UTC)

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / speed)

    return Clock(now, sleep)


def main() -> int:
    configure_logging("INFO", "text", stream=sys.stdout)
    clock = compressed(
        float(os.environ["TASKQ_TEST_CLOCK_START"]), float(os.environ["TASKQ_TEST_CLOCK_SPEED"])
    )
    return asyncio.run(run_scheduler(load_settings(), clock))


if __name__ == "__main__":
    sys.exit(main())

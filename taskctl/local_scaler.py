"""``LocalScaler``: the autoscaler's actuator on one machine, worker processes under the supervisor."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from taskctl.supervisor import ProcessSpec, Supervisor


def worker_spec(group: str, index: int) -> ProcessSpec:
    """Return the process of a group's ``index``-th worker (``worker:email``, ``worker:email#2``)."""
    name = f"worker:{group}" if index == 1 else f"worker:{group}#{index}"
    return ProcessSpec(name, (sys.executable, "-m", "taskctl", "worker", group))


# Below this share of idle CPU another worker process only takes CPU from those running.
BUSY_BELOW = 0.10


class IdleCpu:
    """The share of the machine's CPU time spent idle since the previous call (Linux /proc/stat)."""

    def __init__(self, stat: Path = Path("/proc/stat")) -> None:
        self._stat = stat
        self._last = self._read()

    def __call__(self) -> float:
        """Return the idle share since the last call (1.0 where it cannot be read)."""
        now = self._read()
        (idle0, total0), (idle1, total1) = self._last, now
        self._last = now
        return (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0

    def _read(self) -> tuple[int, int]:
        try:
            fields = [int(v) for v in self._stat.read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all


class LocalScaler:
    """Starts a group's worker processes, or retires the newest ones (SIGTERM: they drain)."""

    def __init__(self, supervisor: Supervisor, *, idle: Callable[[], float] | None = None) -> None:
        self._supervisor = supervisor
        self._started: dict[str, int] = defaultdict(int)  # names are never reused
        self._idle = idle or IdleCpu()

    async def current(self, group: str) -> int:
        """Return how many of the group's workers are kept running (draining ones excluded)."""
        return len(self._names(group))

    async def scale(self, group: str, workers: int) -> None:
        """Start or retire workers until ``workers`` run for the group; none while CPUs are busy."""
        names = self._names(group)
        # Checked at every decision so the idle share covers the interval since the last one.
        idle = self._idle()
        if workers > len(names) and idle < BUSY_BELOW:
            logger.info(
                "{} keeps {} workers of the {} wanted: the machine's CPUs are {:.0%} busy",
                group,
                len(names),
                workers,
                1 - idle,
            )
            workers = len(names)
        for _ in range(workers - len(names)):
            self._started[group] += 1
            self._supervisor.start(worker_spec(group, self._started[group]))
        for name in reversed(names[workers:] if workers < len(names) else []):
            self._supervisor.retire(name)

    def adopt(self, group: str, count: int) -> None:
        """Note that the supervisor was given ``count`` workers of the group at start."""
        self._started[group] = max(self._started[group], count)

    def _names(self, group: str) -> list[str]:
        first = f"worker:{group}"
        own = [n for n in self._supervisor.names() if n == first or n.startswith(first + "#")]
        return sorted(own, key=lambda n: 1 if n == first else int(n.rsplit("#", 1)[1]))

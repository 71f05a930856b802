"""``LocalScaler``: the autoscaler's actuator on one machine, worker processes under the supervisor."""

from __future__ import annotations

import sys
from collections import defaultdict

from taskctl.supervisor import ProcessSpec, Supervisor


def worker_spec(group: str, index: int) -> ProcessSpec:
    """Return the process of a group's ``index``-th worker (``worker:email``, ``worker:email#2``)."""
    name = f"worker:{group}" if index == 1 else f"worker:{group}#{index}"
    return ProcessSpec(name, (sys.executable, "-m", "taskctl", "worker", group))


class LocalScaler:
    """Starts a group's worker processes, or retires the newest ones (SIGTERM: they drain)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._started: dict[str, int] = defaultdict(int)  # names are never reused

    async def current(self, group: str) -> int:
        """Return how many of the group's workers are kept running (draining ones excluded)."""
        return len(self._names(group))

    async def scale(self, group: str, workers: int) -> None:
        """Start or retire workers until ``workers`` run for the group."""
        names = self._names(group)
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

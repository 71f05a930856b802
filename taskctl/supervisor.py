"""Run the pipeline's processes in the foreground, restart crashed ones, stop them cleanly; scale workers and stream readers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from consumers.autoscaler.signals import stream_target

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process of the pipeline: a name for its log prefix and the command that runs it."""

    name: str
    argv: tuple[str, ...]


@dataclass(slots=True)
class _Child:
    spec: ProcessSpec
    process: asyncio.subprocess.Process | None = None
    crashes: int = 0  # exits in a row, each soon after its start: a crash loop
    retiring: bool = False  # told to stop for good (a scale-down): not restarted
    keeper: asyncio.Task[None] | None = None


class Supervisor:
    """Keeps every process running until told to stop, then drains them within a grace period."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        grace: float = 30.0,
        max_backoff: float = 30.0,
        healthy_after: float = 10.0,
        say: Say = print,
    ) -> None:
        self._children = [_Child(spec) for spec in specs]
        self._running = False
        self._grace = grace
        self._max_backoff = max_backoff
        self._healthy_after = healthy_after
        self._say = say
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask every process to stop (idempotent; also what SIGINT and SIGTERM do)."""
        self._stopping.set()

    def names(self) -> list[str]:
        """Return the names of the processes kept running (retiring ones excluded)."""
        return [child.spec.name for child in self._children if not child.retiring]

    def start(self, spec: ProcessSpec) -> None:
        """Add a process and keep it running like the others (a scale-up)."""
        child = _Child(spec)
        self._children.append(child)
        if self._running:
            child.keeper = asyncio.create_task(self._keep(child))

    def retire(self, name: str) -> None:
        """Send SIGTERM to a process and let it drain and exit for good (a scale-down)."""
        for child in self._children:
            if child.spec.name == name and not child.retiring:
                child.retiring = True
                if child.process is not None and child.process.returncode is None:
                    child.process.send_signal(signal.SIGTERM)
                self._say(f"[{name}] retiring: draining its jobs")
                return

    async def run(self) -> int:
        """Run until ``stop()``; return 0 when every child stopped within the grace period."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        # Said only once the handlers are in place, so a Ctrl-C after it always drains.
        self._say(f"supervising {len(self._children)} processes; press Ctrl-C to stop")
        try:
            self._running = True
            for child in self._children:
                child.keeper = asyncio.create_task(self._keep(child))
            await self._stopping.wait()
            return await self._shutdown()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _keep(self, child: _Child) -> None:
        try:
            while not self._stopping.is_set() and not child.retiring:
                child.process = await asyncio.create_subprocess_exec(
                    *child.spec.argv,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                started = time.monotonic()
                self._say(f"[{child.spec.name}] started (pid {child.process.pid})")
                pump = asyncio.create_task(_pump(child.process))
                code = await child.process.wait()
                await pump
                if child.retiring:
                    self._say(f"[{child.spec.name}] retired (exit {code})")
                    return
                if self._stopping.is_set():
                    return
                # Only a crash loop backs off: a process that ran well and then died (a kill,
                # an out-of-memory) is replaced at once, and its count starts over.
                ran_well = time.monotonic() - started >= self._healthy_after
                child.crashes = 0 if ran_well else child.crashes + 1
                delay = (
                    min(self._max_backoff, 0.25 * 2 ** min(child.crashes, 10))
                    if child.crashes
                    else 0.0
                )
                self._say(f"[{child.spec.name}] exited with {code}; restarting in {delay:.1f}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
        finally:
            if child.retiring and child in self._children:
                self._children.remove(child)

    async def _shutdown(self) -> int:
        keepers = [child.keeper for child in self._children if child.keeper is not None]
        running = [c.process for c in self._children if c.process and c.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        self._say(f"stopping {len(running)} processes (grace {self._grace:.0f}s)")
        clean = True
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self._grace)
        except TimeoutError:
            clean = False
            for process in running:
                if process.returncode is None:
                    process.kill()
            await asyncio.gather(*(p.wait() for p in running))
        await asyncio.gather(*keepers, return_exceptions=True)
        return 0 if clean else 1


async def _pump(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    # Children log JSON lines; pass them through untouched so `taskctl up > file` stays JSON.
    async for line in process.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def child_argv(*command: str) -> tuple[str, ...]:
    """Return the argv of ``taskctl COMMAND`` run as a child of this process, which it does not outlive."""
    return (sys.executable, "-m", "taskctl", f"--parent-pid={os.getpid()}", *command)


def scaled_spec(target: str, index: int) -> ProcessSpec:
    """Return the ``index``-th process of what the autoscaler scales: a group's worker (``worker:email#2``), or ``stream:<source>``'s reader."""
    source = target.removeprefix(stream_target(""))
    first = f"worker:{target}" if source == target else target
    name = first if index == 1 else f"{first}#{index}"
    if source == target:
        return ProcessSpec(name, child_argv("worker", target))
    # Its consumer name in the stream's group: readers of the source on other hosts never share one.
    consumer = f"{socket.gethostname()}-{index}"
    return ProcessSpec(name, child_argv("stream", source, "--consumer", consumer))


# Below this share of idle CPU another worker process only takes CPU from those running.
BUSY_BELOW = 0.10


def idle_cpu(stat: Path = Path("/proc/stat")) -> Callable[[], float]:
    """Return a function giving the machine's idle CPU share since its previous call (Linux)."""

    def read() -> tuple[int, int]:
        try:
            fields = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    last = read()

    def idle() -> float:
        nonlocal last
        (idle0, total0), (idle1, total1) = last, read()
        last = (idle1, total1)
        return (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0  # 1.0: unreadable

    return idle


class LocalScaler:
    """Starts a group's workers (or a stream source's readers), or retires the newest ones (SIGTERM: they drain)."""

    def __init__(
        self,
        supervisor: Supervisor,
        *,
        started: Mapping[str, int] | None = None,
        idle: Callable[[], float] | None = None,
    ) -> None:
        """Scale through ``supervisor``, which was given ``started`` processes of each group (or ``stream:<source>``)."""
        self._supervisor = supervisor
        self._started = defaultdict(int, started or {})  # names are never reused
        self._idle = idle or idle_cpu()

    async def current(self, group: str) -> int:
        """Return how many of the group's workers are kept running (draining ones excluded)."""
        return len(self._names(group))

    async def scale(self, group: str, workers: int) -> None:
        """Start or retire workers until ``workers`` run for the group; none while CPUs are busy."""
        names = self._names(group)
        # Checked at every decision so the idle share covers the interval since the last one.
        idle = self._idle()
        if workers > len(names) and idle < BUSY_BELOW:
            what = (group, len(names), workers, 1 - idle)
            logger.info(
                "{} keeps {} workers of the {} wanted: the machine's CPUs are {:.0%} busy", *what
            )
            workers = len(names)
        for _ in range(workers - len(names)):
            self._started[group] += 1
            self._supervisor.start(scaled_spec(group, self._started[group]))
        for name in reversed(names[workers:]):
            self._supervisor.retire(name)

    def _names(self, group: str) -> list[str]:
        first = scaled_spec(group, 1).name
        own = [n for n in self._supervisor.names() if n == first or n.startswith(first + "#")]
        return sorted(own, key=lambda n: 1 if n == first else int(n.rsplit("#", 1)[1]))

"""Run the pipeline's processes in the foreground, restart crashed ones, stop them cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    restarts: int = 0
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
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
        say: Say = print,
    ) -> None:
        self._children = [_Child(spec) for spec in specs]
        self._running = False
        self._grace = grace
        self._max_backoff = max_backoff
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
        if spec.name in self.names():
            raise ValueError(f"a process named {spec.name!r} runs already")
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
        raise KeyError(name)

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
            await self._keep_running(child)
        finally:
            if child.retiring and child in self._children:
                self._children.remove(child)

    async def _keep_running(self, child: _Child) -> None:
        while not self._stopping.is_set() and not child.retiring:
            child.process = await asyncio.create_subprocess_exec(
                *child.spec.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            self._say(f"[{child.spec.name}] started (pid {child.process.pid})")
            child.pumps = [asyncio.create_task(self._pump(child))]
            code = await child.process.wait()
            await asyncio.gather(*child.pumps)
            if child.retiring:
                self._say(f"[{child.spec.name}] retired (exit {code})")
                return
            if self._stopping.is_set():
                return
            child.restarts += 1
            # Back off exponentially so a child that dies at once does not spin the CPU.
            delay = min(self._max_backoff, 0.5 * 2 ** min(child.restarts, 10))
            self._say(f"[{child.spec.name}] exited with {code}; restarting in {delay:.1f}s")
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                continue

    async def _pump(self, child: _Child) -> None:
        assert child.process is not None
        assert child.process.stdout is not None
        # Children log JSON lines; pass them through untouched so `taskctl up > file` stays JSON.
        async for line in child.process.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()

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

"""Circuit breakers per dependency: stop feeding jobs to a dependency that keeps failing.

Closed, a breaker counts consecutive failures; at the threshold it opens and jobs that need the
dependency are parked (sent back through a delay tier, their attempt unspent) instead of
burning their retry budget. After the cooldown it lets one probe through (half-open): a success
closes it, a failure opens it again (https://martinfowler.com/bliki/CircuitBreaker.html).
An optional ``on_change`` callback hears of every change of state, for metrics and reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

Clock = Callable[[], float]
OnChange = Callable[["CircuitBreaker"], None]


class BreakerState(StrEnum):
    """Where a breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """One dependency's breaker (per worker process)."""

    name: str
    threshold: int = 5
    cooldown: float = 30.0
    clock: Clock = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = field(default=0.0)
    probing: bool = False
    on_change: OnChange | None = None

    def allow(self) -> bool:
        """Return whether a job needing the dependency may run now (one probe when half-open)."""
        if self.state is BreakerState.OPEN and self.clock() - self.opened_at >= self.cooldown:
            self.probing = False
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_in(self) -> float:
        """Return the seconds until the breaker lets a probe through (0 when it would now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.cooldown - (self.clock() - self.opened_at))

    def skip_probe(self) -> None:
        """Forget a granted probe that did not run, so the next job may probe instead."""
        self.probing = False

    def succeeded(self) -> None:
        """Record a success: the dependency works, so the breaker closes."""
        self.failures = 0
        self.probing = False
        self._move(BreakerState.CLOSED)

    def failed(self) -> None:
        """Record a failure: a failed probe, or the threshold reached, opens the breaker."""
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self.probing = False
            self._move(BreakerState.OPEN)

    def _move(self, to: BreakerState) -> None:
        """Enter state ``to``, telling ``on_change`` when that is a change."""
        # The fields are set before the callback runs, so it sees the breaker as it now is;
        # staying put (a failure while open, a success while closed) is no transition.
        if to is self.state:
            return
        self.state = to
        if self.on_change is not None:
            self.on_change(self)


@dataclass(slots=True)
class Breakers:
    """The breakers of one worker, created on first use per dependency name."""

    threshold: int = 5
    cooldown: float = 30.0
    clock: Clock = time.monotonic
    by_name: dict[str, CircuitBreaker] = field(default_factory=dict)
    on_change: OnChange | None = None

    def get(self, name: str) -> CircuitBreaker:
        """Return the breaker of dependency ``name``."""
        breaker = self.by_name.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name, self.threshold, self.cooldown, self.clock, on_change=self.on_change
            )
            self.by_name[name] = breaker
        return breaker

    def blocking(self, names: tuple[str, ...]) -> CircuitBreaker | None:
        """Return the first breaker among ``names`` that refuses a job now, or ``None``."""
        for name in names:
            breaker = self.get(name)
            if not breaker.allow():
                return breaker
        return None

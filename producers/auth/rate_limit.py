"""Token buckets: each credential (or webhook source) gets ``rate`` requests a second, ``burst`` at once."""

from __future__ import annotations

import math
import time

_MAX_BUCKETS = 10_000  # bearer-token subjects are unbounded; full buckets are dropped first


class RateLimiter:
    """Per-key token buckets held in this process (each API replica limits on its own)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take one token from ``key``'s bucket; return 0, or the seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            if len(self._buckets) >= _MAX_BUCKETS and key not in self._buckets:
                self._forget_full(now)
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for key in full or list(self._buckets)[: _MAX_BUCKETS // 10]:
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    """Return a ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))

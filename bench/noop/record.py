"""What every system's no-op job calls: clock and CPU at its 1st and N-th call, into a file.

A worker process is told where to write and after how many jobs by ``BENCH_RESULT`` and
``BENCH_JOBS``; without them (a process that only enqueues) nothing is recorded. A payload that
carries ``sent_ns`` (the producer's ``time.time_ns()`` at send) also has its submit-to-start
latency kept, for bench/latency.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

PAYLOAD_BYTES = 239


def payload(seq: int, sent_ns: int | None = None) -> dict[str, Any]:
    """Return job ``seq``'s payload: a JSON object of exactly 239 bytes, compactly encoded."""
    job: dict[str, Any] = {"to": "user@example.com", "subject": "Welcome", "seq": f"{seq:08d}"}
    if sent_ns is not None:
        job["sent_ns"] = sent_ns
    job["body"] = ""
    job["body"] = "x" * (PAYLOAD_BYTES - len(encode(job)))
    return job


def encode(job: dict[str, Any]) -> bytes:
    """Return ``job`` as compact JSON, the body the raw and FastStream consumers receive."""
    return json.dumps(job, separators=(",", ":")).encode()


class Completions:
    """Counts calls; stamps the 1st and the N-th (perf_counter, process CPU) and writes them out."""

    def __init__(self, jobs: int, result: Path | None) -> None:
        self.jobs = jobs
        self._result = result
        self._lock = threading.Lock()  # Dramatiq runs its actors on several threads
        self._count = 0
        self._first: tuple[float, float] = (0.0, 0.0)
        self._previous = 0
        self._longest_pause = 0  # ns between two consecutive calls: shows a worker stalling
        self._latencies: list[int] = []

    @classmethod
    def from_env(cls) -> Completions:
        result = os.environ.get("BENCH_RESULT")
        return cls(int(os.environ.get("BENCH_JOBS", "0")), Path(result) if result else None)

    def tick(self, job: object) -> None:
        """Count one job starting; ``job`` is its decoded payload."""
        started = time.time_ns()
        if self._result is None:
            return
        with self._lock:
            self._count += 1
            if self._count > 1:
                self._longest_pause = max(self._longest_pause, started - self._previous)
            self._previous = started
            if isinstance(job, dict) and "sent_ns" in job:
                self._latencies.append(started - int(job["sent_ns"]))
            if self._count == 1:
                self._first = (time.perf_counter(), time.process_time())
            elif self._count == self.jobs:
                self._write((time.perf_counter(), time.process_time()))

    def _write(self, last: tuple[float, float]) -> None:
        assert self._result is not None
        data = {
            "jobs": self.jobs,
            "first": self._first,
            "last": last,
            "longest_pause_ns": self._longest_pause,
            "latency_ns": self._latencies,
        }
        partial = self._result.with_suffix(".partial")
        partial.write_text(json.dumps(data))
        partial.replace(self._result)  # the bench never reads half a file

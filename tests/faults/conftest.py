"""What the fault tests share: a worker process on a cluster of the session's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def worker(
    env: dict[str, str], log: Path, group: str = "email"
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``taskctl worker GROUP`` with ``env``, its output in ``log``, until the block ends; then drain it."""
    # A file, not a pipe: a worker logging a line a job would fill a pipe nobody reads and stall.
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskctl", "worker", group],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

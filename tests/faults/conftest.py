"""What the fault tests share: a worker process on a cluster of the session's own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import interrupted, reap


@contextmanager
def worker(env: dict[str, str], group: str = "email") -> Iterator[subprocess.Popen[str]]:
    """Run ``taskctl worker GROUP`` with ``env`` until the block ends, then stop it as Ctrl-C does."""
    process = subprocess.Popen(
        [sys.executable, "-m", "taskctl", "worker", group],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            interrupted(process)
        reap(process)

"""Worker throughput: taskq's worker against raw consumers on the same broker, in one series.

Usage: .venv/bin/python bench/worker_throughput.py [--jobs 20000] [--rounds 3] [--only ...]
                                                   [--json FILE] [--profile DIR]

The raw lines and taskq of ``bench/peers.py`` (same harness, ``bench/worker_runs.py``), without
the peers, plus taskq with payloads and results sealed (``taskq-sealed``, ``TASKQ_DATA_KEYS``),
so it runs in taskq's own venv: the same no-op job, each system's worker its own
process, rounds interleaved, medians with min-max, CPU µs per job. ``--profile DIR`` samples
taskq's worker with py-spy (``pip install py-spy``) into DIR, one file of collapsed stacks a
round, for ``py-spy``'s own viewers or any flame-graph tool.
"""

from __future__ import annotations

from worker_runs import RAW_SYSTEMS, TASKQ, TASKQ_SEALED, compare

if __name__ == "__main__":
    compare((*RAW_SYSTEMS, TASKQ, TASKQ_SEALED), (), __doc__)

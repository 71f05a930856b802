"""``python -m consumers GROUP``: run one consumer group's worker (``taskctl up`` starts them)."""

from __future__ import annotations

import sys

from consumers.process import run, run_worker
from topology.errors import TaskqError


def main() -> None:
    """Run the worker of the group named on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m consumers GROUP")
    try:
        sys.exit(run(run_worker(sys.argv[1])))
    except TaskqError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()

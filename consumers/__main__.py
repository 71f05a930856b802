"""``python -m consumers GROUP``: run one consumer group's worker (``taskctl up`` starts them)."""

from __future__ import annotations

import sys

from loguru import logger

from consumers.process import run, run_worker
from telemetry.logs import LogSettings, configure_logging
from topology.errors import TaskqError
from topology.settings import load_settings


def main() -> None:
    """Run the worker of the group named on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m consumers GROUP")
    try:
        configure_logging(load_settings(LogSettings))
        sys.exit(run(run_worker(sys.argv[1])))
    except TaskqError as exc:
        # Logged, not printed: under `taskctl up` this line joins the others as JSON.
        logger.error("worker for group {} cannot run: {}", sys.argv[1], exc)
        sys.exit(1)


if __name__ == "__main__":
    main()

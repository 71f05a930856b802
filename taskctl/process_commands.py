"""``taskctl up``, ``serve`` and ``worker``: the pipeline's processes in the foreground, their logs as output."""

from __future__ import annotations

from typing import Annotated

import typer

from taskctl.context import TopologyFile, log_as_output, run, serve


def up(
    file: TopologyFile = None,
    grace: Annotated[
        float, typer.Option(help="Seconds each process gets to drain on stop.")
    ] = 30.0,
) -> None:
    """Run the whole pipeline here until Ctrl-C.

    Applies the topology, then runs the API, each handled group's workers and the
    autoscaler. Its logs are its output.
    """
    log_as_output()
    from taskctl.pipeline import up as run_up

    serve("taskctl up", lambda: run(run_up(file, grace=grace)))


def worker(group: Annotated[str, typer.Argument(help="The consumer group to run.")]) -> None:
    """Run one consumer group's worker until SIGTERM.

    SIGTERM or Ctrl-C drains it. Its logs are its output.
    """
    log_as_output()
    from taskctl.assembly import run, run_worker
    from topology.settings import load_settings

    serve(f"the worker of group {group}", lambda: run(run_worker(group, load_settings())))


def api() -> None:
    """Serve the HTTP API until SIGTERM.

    It listens on TASKQ_HOST:TASKQ_PORT; taskctl up runs it. Its logs are its output.
    """
    log_as_output()
    from taskctl.assembly import serve_api
    from topology.settings import load_settings

    serve("the API", lambda: serve_api(load_settings()))

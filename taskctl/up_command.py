"""``taskctl up``: apply the topology, then run every pipeline process in the foreground."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from consumers.process import groups_with_handlers, load_handlers
from consumers.settings import WorkerSettings
from taskctl.context import fail, out, run, settings_or_exit, topology_or_exit
from taskctl.supervisor import ProcessSpec, Supervisor
from topology.apply import apply_topology
from topology.errors import TaskqError
from topology.model import CompiledTopology
from topology.plan import Action
from topology.settings import load_settings


def pipeline_processes(topology: CompiledTopology) -> list[ProcessSpec]:
    """Return the processes that make up the pipeline for ``topology``.

    The API, and one worker per group that a registered handler serves (``TASKQ_HANDLERS``,
    default the shipped examples); the autoscaler (issue 6) joins here when it lands.
    """
    registry = load_handlers(load_settings(WorkerSettings).handlers)
    workers = [
        ProcessSpec(f"worker:{group}", (sys.executable, "-m", "consumers", group))
        for group in groups_with_handlers(topology, registry)
    ]
    return [ProcessSpec("api", (sys.executable, "-m", "taskctl.serve")), *workers]


def up(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Topology file.")] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds each process gets to drain on stop.")
    ] = 30.0,
) -> None:
    """Apply the topology and run every pipeline process until Ctrl-C."""
    topology = topology_or_exit(file)
    settings = settings_or_exit()
    report = run(apply_topology(topology, settings))
    out.print(
        f"{report.server.product} {report.server.version}: topology applied to {settings.describe()}: "
        f"{len(report.before.of(Action.CREATE))} created, {len(report.after.of(Action.MATCH))} in place",
        highlight=False,
    )
    try:
        processes = pipeline_processes(topology)
    except TaskqError as exc:
        fail(exc)
    if not processes:
        out.print("no pipeline processes exist yet besides the applied topology")
    # Plain text: "[worker:email] started" must not be read as rich markup.
    supervisor = Supervisor(
        processes, grace=grace, say=lambda line: out.print(line, markup=False, highlight=False)
    )
    raise typer.Exit(asyncio.run(supervisor.run()))

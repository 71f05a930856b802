"""``taskctl up``: apply the topology, then run every pipeline process in the foreground."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from taskctl.context import out, run, settings_or_exit, topology_or_exit
from taskctl.supervisor import ProcessSpec, Supervisor
from topology.apply import apply_topology
from topology.model import CompiledTopology
from topology.plan import Action


def pipeline_processes(topology: CompiledTopology) -> list[ProcessSpec]:
    """Return the processes that make up the pipeline for ``topology``.

    The workers (issue 4) and the autoscaler (issue 6) join the HTTP API here as they land.
    """
    return [ProcessSpec("api", (sys.executable, "-m", "producers.api"))]


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
    processes = pipeline_processes(topology)
    if not processes:
        out.print("no pipeline processes exist yet besides the applied topology")
    supervisor = Supervisor(processes, grace=grace, say=out.print)
    raise typer.Exit(asyncio.run(supervisor.run()))

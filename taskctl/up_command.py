"""``taskctl up``: apply the topology, then run every pipeline process in the foreground."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from loguru import logger

from jobstore.factory import open_store
from producers.settings import SubmitSettings
from taskctl.admin_key import ensure_admin_key, key_path
from taskctl.autoscale_command import supervise
from taskctl.context import fail, log_with_children, run, settings_or_exit, topology_or_exit
from taskctl.supervisor import ProcessSpec
from topology.apply import apply_topology
from topology.errors import TaskqError
from topology.plan import Action
from topology.settings import load_settings


def up(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Topology file.")] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds each process gets to drain on stop.")
    ] = 30.0,
) -> None:
    """Apply the topology, then run the API, each handled group's workers and the autoscaler until Ctrl-C."""
    log_with_children()
    topology = topology_or_exit(file)
    settings = settings_or_exit()
    report = run(apply_topology(topology, settings))
    logger.info(
        "{} {}: topology applied to {}: {} created, {} in place",
        report.server.product,
        report.server.version,
        settings.describe(),
        len(report.before.of(Action.CREATE)),
        len(report.after.of(Action.MATCH)),
    )
    run(_admin_key())
    api = ProcessSpec("api", (sys.executable, "-m", "taskctl.serve"))
    try:
        code = asyncio.run(supervise(topology, settings, [api], grace=grace))
    except TaskqError as exc:
        fail(exc)
    raise typer.Exit(code)


async def _admin_key() -> None:
    """Make the local admin key on the first start (every door needs a credential)."""
    store = open_store(load_settings(SubmitSettings).store_url)
    try:
        await store.migrate()
        await ensure_admin_key(store, key_path())
    finally:
        await store.close()

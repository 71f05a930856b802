"""What every taskctl command needs: settings, the compiled topology, and error reporting."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from telemetry.logs import LogSettings, configure_logging
from topology.compiler import compile_topology
from topology.errors import TaskqError
from topology.loader import load_topology, topology_path
from topology.model import CompiledTopology
from topology.settings import BrokerSettings, load_settings

T = TypeVar("T")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(error: TaskqError) -> NoReturn:
    """Print ``error`` to stderr and exit with status 1."""
    err.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
    raise typer.Exit(1)


def topology_or_exit(path: Path | None) -> CompiledTopology:
    """Return the compiled topology from ``path`` (default: ``TASKQ_TOPOLOGY`` or packaged)."""
    try:
        return compile_topology(load_topology(path or topology_path()))
    except TaskqError as exc:
        fail(exc)


def settings_or_exit(vhost: str | None = None) -> BrokerSettings:
    """Return the broker settings from the environment, pointed at ``vhost`` when given."""
    try:
        settings = load_settings(BrokerSettings)
    except TaskqError as exc:
        fail(exc)
    return settings.with_vhost(vhost) if vhost else settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion, turning taskq errors into a message and exit status 1."""
    try:
        return asyncio.run(coro)
    except TaskqError as exc:
        fail(exc)


def log_with_children() -> None:
    """Log to stdout, where a supervisor passes its children's lines on, in the format they use too."""
    try:
        chosen = configure_logging(load_settings(LogSettings), stream=sys.stdout)
    except TaskqError as exc:
        fail(exc)
    # Each child logs to a pipe, which alone would make it pick JSON: it follows this process.
    os.environ["TASKQ_LOG_FORMAT"] = chosen

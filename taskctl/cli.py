"""The ``taskctl`` command line: one entry point for operators."""

from __future__ import annotations

import sys

import typer

from consumers.process import run, run_worker
from taskctl import (
    autoscale_command,
    breakers_command,
    callback_command,
    dlq_commands,
    jobs_commands,
    keys_commands,
    topology_commands,
    up_command,
)
from taskctl.context import fail
from telemetry.logs import LogSettings, configure_logging
from topology.errors import TaskqError
from topology.settings import load_settings

app = typer.Typer(
    name="taskctl",
    help="Operate taskq: the topology, the pipeline processes, jobs and dead letters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(topology_commands.app, name="topology")
app.add_typer(dlq_commands.app, name="dlq")
app.add_typer(keys_commands.app, name="keys")
app.command(name="up")(up_command.up)
app.command(name="breakers")(breakers_command.breakers)
for command in (
    jobs_commands.submit,
    jobs_commands.status,
    jobs_commands.watch,
    jobs_commands.jobs,
    jobs_commands.cancel,
    jobs_commands.queues,
):
    app.command()(command)


app.command(name="callback-secret")(callback_command.callback_secret)
app.command()(autoscale_command.autoscale)
app.command()(autoscale_command.scale)


@app.command()
def worker(group: str = typer.Argument(..., help="The consumer group to run.")) -> None:
    """Run one consumer group's worker in the foreground (SIGTERM drains it)."""
    try:
        code = run(run_worker(group))
    except TaskqError as exc:
        fail(exc)
    raise typer.Exit(code)


def main() -> None:
    """Run the ``taskctl`` command line, its logs (not its output) going to stderr."""
    try:
        configure_logging(load_settings(LogSettings))
    except TaskqError as exc:
        sys.exit(f"error: {exc}")
    app()

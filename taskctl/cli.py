"""The ``taskctl`` command line: one entry point for operators."""

from __future__ import annotations

import typer

from taskctl import jobs_commands, topology_commands, up_command

app = typer.Typer(
    name="taskctl",
    help="Operate taskq: the topology, the pipeline processes and (later) the DLQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(topology_commands.app, name="topology")
app.command(name="up")(up_command.up)
for command in (
    jobs_commands.submit,
    jobs_commands.status,
    jobs_commands.watch,
    jobs_commands.jobs,
    jobs_commands.cancel,
    jobs_commands.queues,
):
    app.command()(command)


def main() -> None:
    """Run the ``taskctl`` command line."""
    app()

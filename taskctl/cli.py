"""The ``taskctl`` command line: one entry point for operators."""

# Every command imports what it runs inside its own body, so ``taskctl --help`` and
# ``taskctl status`` start without loading the worker, the API, the broker client or the AWS SDK.

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from taskctl import (
    autoscale_command,
    breakers_command,
    callback_command,
    config_command,
    dlq_commands,
    doctor_command,
    jobs_commands,
    keys_commands,
    process_commands,
    topology_commands,
)
from taskctl.context import fail, log_quietly
from topology.errors import TaskqError


class _Commands(TyperGroup):
    """The command group: a taskq error ends any command with its message on stderr, status 1."""

    def invoke(self, ctx: Any) -> Any:  # typer's Context class lives in its private click copy
        try:
            return super().invoke(ctx)
        except TaskqError as exc:
            fail(exc)


app = typer.Typer(
    cls=_Commands,
    name="taskctl",
    help="Operate taskq: the topology, the pipeline processes, jobs, dead letters and API keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help, as every group has: rich's help panels alone would double the start-up time.
    rich_markup_mode=None,
)


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Log what the command does (INFO) on stderr; by default only warnings and "
            "errors are logged. TASKQ_LOG_LEVEL, when set, chooses the level instead.",
        ),
    ] = False,
) -> None:
    # The long-running commands (up, worker, autoscale) log their own way: their logs are
    # their output.
    log_quietly(verbose)


app.add_typer(topology_commands.app, name="topology")
app.add_typer(dlq_commands.app, name="dlq")
app.add_typer(keys_commands.app, name="keys")
for command in (
    process_commands.up,
    process_commands.worker,
    config_command.config,
    autoscale_command.autoscale,
    autoscale_command.scale,
    jobs_commands.submit,
    jobs_commands.status,
    jobs_commands.watch,
    jobs_commands.jobs,
    jobs_commands.cancel,
    jobs_commands.queues,
    breakers_command.breakers,
    doctor_command.doctor,
):
    app.command()(command)
app.command(name="callback-secret")(callback_command.callback_secret)
app.command(name="serve")(process_commands.api)


def main() -> None:
    """Run the ``taskctl`` command line."""
    app()

"""The ``taskctl`` command line: one entry point for operators."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup

from taskctl.context import fail, log_quietly
from topology.errors import TaskqError

# Each command and the module that defines it (in help order). A command's module is imported,
# and its commands built, only when it runs or a help lists it: `taskctl status` loads neither
# the worker, the API, the broker client nor the other commands. The command modules import
# what a command runs inside it, and leave out `from __future__ import annotations`: typer reads
# every parameter's annotation to build a command, and a string to evaluate costs more.
MODULES = {
    **dict.fromkeys(("up", "worker", "scheduler", "stream"), "process_commands"),
    "config": "config_command",
    "autoscale": "process_commands",
    "scale": "health_commands",
    **dict.fromkeys(("submit", "status", "watch", "jobs", "cancel"), "jobs_commands"),
    **dict.fromkeys(("queues", "breakers", "doctor"), "health_commands"),
    "callback-secret": "jobs_commands",
    "serve": "process_commands",
    "topology": "topology_commands",
    "deploy": "deploy_commands",
    "dlq": "dlq_commands",
    "schedules": "schedule_commands",
    "workflow": "workflow_commands",
    "keys": "keys_commands",
    "retention": "retention_commands",
}
# Commands that read only settings and the job store: nothing they run logs, so they skip setting
# logging up (loguru and the tracing API, a tenth of their start-up).
SILENT = frozenset({"config", "status", "jobs", "breakers", "keys"})


class _Lazy(MutableMapping[str, Any]):
    """The commands by name, each built on first lookup from its module's ``app``."""

    def __init__(self) -> None:
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            app = importlib.import_module(f"taskctl.{MODULES[name]}").app
            group = typer.main.get_group(app)
            # A module of sub-commands is itself the group; the others only hold commands.
            self._built.update({name: group} if app.info.name == name else group.commands)
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)


class _Commands(TyperGroup):
    """The command group: a taskq error ends any command with its message on stderr, status 1."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.commands = _Lazy()

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
    ctx: typer.Context,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Log what the command does (INFO) on stderr; by default only warnings and "
            "errors are logged. TASKQ_LOG_LEVEL, when set, chooses the level instead.",
        ),
    ] = False,
    parent_pid: Annotated[int | None, typer.Option("--parent-pid", hidden=True)] = None,
) -> None:
    # The long-running commands (up, worker, autoscale) log their own way: their logs are
    # their output.
    if ctx.invoked_subcommand not in SILENT:
        log_quietly(verbose)
    if parent_pid is not None:
        end_with_parent(parent_pid)


def end_with_parent(pid: int) -> None:
    """Have this process sent SIGTERM when ``pid``, the ``taskctl up`` that started it, dies, even by SIGKILL."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1  # from <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != pid:  # it died before the line above: nobody will send the signal
        raise SystemExit(f"the process that started this one ({pid}) is gone")


def main() -> None:
    """Run the ``taskctl`` command line."""
    app()

"""What every taskctl command needs: output, logging, settings, the topology and the job store."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import orjson
import typer

from topology.errors import TaskqError

if TYPE_CHECKING:
    from rich.console import Console

    from jobstore.model import JobStore
    from producers.tenancy import Viewer
    from topology.compiled import CompiledTopology
    from topology.sealing import Sealer
    from topology.settings import BrokerSettings

T = TypeVar("T")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]
TopologyFile = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", help="Topology file (default: $TASKQ_TOPOLOGY or the packaged one)."
    ),
]
OutputFile = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]


def out(*, stderr: bool = False) -> Console:
    """Return a console for a person: on the command's output, or on stderr (progress bars)."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, highlight=False)


def write_out(text: str, output: Path | None) -> None:
    """Print ``text`` as it is, or write it to ``output`` and say so."""
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_bytes(text.encode())
        out().print(f"wrote {output}")


def fail(error: TaskqError) -> NoReturn:
    """Print ``error`` to stderr and exit with status 1."""
    # click's styling, not rich's: an error needs no table, and rich costs a tenth of a second.
    typer.secho("error:", fg="red", bold=True, err=True, nl=False)
    typer.echo(f" {error}", err=True)
    raise typer.Exit(1)


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON, for scripts."""
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


FOLDED = 12  # the fewest characters an optional column is shown in; longer values fold
GAP = 3  # a space of padding each side of the blank rule between two columns
EDGES = 2  # a blank column left and right of the table


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, whole: int) -> None:
    """Print a table as wide as the terminal; its first ``whole`` columns (ids, states) are never cut."""
    from rich import box
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    # The optional columns share what is left, folding their values; the rightmost goes while
    # they cannot each have FOLDED characters.
    wants = [
        max([cell_len(header)] + [cell_len(row[i]) for row in rows])
        for i, header in enumerate(headers)
    ]
    console = out()
    fixed = sum(wants[:whole]) + EDGES
    shown = len(headers)
    while (
        shown > whole
        and fixed + GAP * (shown - 1) + sum(min(want, FOLDED) for want in wants[whole:shown])
        > console.width
    ):
        shown -= 1
    widths = wants[:whole] + _shares(wants[whole:shown], console.width - fixed - GAP * (shown - 1))
    # Its own width, not the terminal's: whole columns stay whole on a terminal too narrow
    # for them, where the terminal wraps the lines instead.
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, width=EDGES + GAP * (shown - 1) + sum(widths)
    )
    for i, header in enumerate(headers[:shown]):
        table.add_column(header, width=widths[i], no_wrap=i < whole, overflow="fold")
    for row in rows:
        # Text, not markup: a job type or an error may hold square brackets.
        table.add_row(*(Text(cell) for cell in row[:shown]))
    console.print(table)


def _shares(wants: list[int], room: int) -> list[int]:
    """Return widths within ``room``: each its want up to ``FOLDED``, then the rest, least wanting first."""
    widths = [min(want, FOLDED) for want in wants]
    spare = room - sum(widths)
    by_want = sorted(range(len(wants)), key=wants.__getitem__)
    for served, i in enumerate(by_want):
        more = min(wants[i] - widths[i], spare // (len(by_want) - served))
        widths[i] += more
        spare -= more
    return widths


Cell = str | Callable[[Mapping[str, Any]], str]  # a field shown as it is, or how to show one
Column = str | tuple[str, Cell]  # a field under its own name, or a header and its cell


def print_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, whole: int, as_json: bool
) -> None:
    """Print ``rows`` as JSON, or as a table of ``columns`` fitted as ``print_table``."""
    if as_json:
        print_json(rows)
        return
    pairs = [(c, c) if isinstance(c, str) else c for c in columns]
    cells = [[c(row) if callable(c) else str(row[c]) for _, c in pairs] for row in rows]
    print_table([header for header, _ in pairs], cells, whole=whole)


def to_the_second(moment: str | None) -> str:
    """Return a UTC ISO time to the second, for a table cell (``--json`` keeps it whole)."""
    return "" if moment is None else moment[:19] + "Z"


def compiled_topology(path: Path | None) -> CompiledTopology:
    """Return the compiled topology from ``path`` (default: ``TASKQ_TOPOLOGY`` or packaged)."""
    from topology.compiled import compile_topology
    from topology.loader import load_topology
    from topology.settings import WorkerSettings, read_section

    poison = read_section(WorkerSettings).poison_deliveries
    return compile_topology(load_topology(path), poison_deliveries=poison)


def broker_settings(vhost: str | None = None) -> BrokerSettings:
    """Return the broker settings from the environment, pointed at ``vhost`` when given."""
    from topology.settings import BrokerSettings, read_section

    settings = read_section(BrokerSettings)
    return settings.with_vhost(vhost) if vhost else settings


def client_viewer() -> Viewer:
    """Return whose jobs and workflows the commands see: ``TASKQ_TENANT``'s, as the Python clients do."""
    from producers.tenancy import Viewer
    from topology.settings import ClientSettings, read_section

    return Viewer(read_section(ClientSettings).tenant)


def data_sealer() -> Sealer:
    """Return what opens sealed results under the data keys of the environment."""
    # Read each time, not cached: a process that changes TASKQ_DATA_KEYS (a key rotation, the
    # tests) must not open jobs with the keys it read first.
    from topology.settings import EncryptionSettings, read_section

    return read_section(EncryptionSettings).sealer()


@asynccontextmanager
async def job_store(url: str | None = None) -> AsyncIterator[JobStore]:
    """Open the job store at ``url`` (default: ``TASKQ_STORE_URL``), migrated, and close it after."""
    from jobstore.model import open_store
    from topology.settings import LocationSettings, read_section

    store = open_store(url or read_section(LocationSettings).store_url)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end on an event loop of its own: uvloop's (the faster) where installed."""
    import asyncio  # only for the commands that run one: help and errors need none

    try:
        import uvloop
    except ImportError:  # Windows, or an install without it: asyncio's own loop works too
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


def in_store(work: Callable[[JobStore], Awaitable[T]]) -> T:
    """Run ``work`` on the job store, opened for it and closed after."""

    async def go() -> T:
        async with job_store() as store:
            return await work(store)

    return run(go())


def log_quietly(verbose: bool) -> None:
    """Log to stderr for a person: warnings and errors, INFO if ``verbose``; ``TASKQ_LOG_*`` win when set."""
    import logging

    from telemetry.logs import configure_logging
    from topology.settings import LogSettings, read_section

    settings = read_section(LogSettings)
    chosen = settings.model_fields_set
    level = settings.log_level if "log_level" in chosen else "INFO" if verbose else "WARNING"
    configure_logging(level, settings.log_format if "log_format" in chosen else "text")
    if not (verbose or "log_level" in chosen):
        # The broker client logs a failed connection as an error, which the command then
        # reports itself, in one line that says what to do.
        for name in ("aiormq", "aio_pika"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def serve(what: str, start: Callable[[], int]) -> NoReturn:
    """Run a long-running command, logging to stdout (its output), and exit with its status."""
    from loguru import logger

    from telemetry.logs import configure_logging
    from topology.settings import LogSettings, read_section

    settings = read_section(LogSettings)
    chosen = configure_logging(settings.log_level, settings.log_format, stream=sys.stdout)
    # Each child logs to a pipe, which alone would make it pick JSON: it follows this process.
    os.environ["TASKQ_LOG_FORMAT"] = chosen
    try:
        code = start()
    except TaskqError as exc:  # logged: the logs are the output
        logger.error("{} failed: {}", what, exc)
        raise typer.Exit(1) from None
    raise typer.Exit(code)

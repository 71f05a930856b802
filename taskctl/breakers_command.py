"""``taskctl breakers``: the circuit breakers of running workers, as they recorded them in the job store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from jobstore.model import BreakerRecord
from producers.backends import open_backends
from taskctl.context import out, run
from topology.durations import format_duration
from topology.errors import SettingsError


def breakers(
    group: Annotated[str | None, typer.Option("--group", help="Only this consumer group.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")
    ] = False,
) -> None:
    """List running workers' circuit breakers (each shows once it has opened): state, failures, since."""
    now = datetime.now(UTC)
    rows = [_view(record, now) for record in run(_records(group))]
    if as_json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        where = f" in group {group}" if group else ""
        out.print(
            f"no circuit breakers recorded{where}: no running worker's breaker has opened",
            highlight=False,
        )
        return
    table = Table("group", "dependency", "worker", "state", "failures", "since")
    for row in rows:
        table.add_row(
            row["group"],
            row["dependency"],
            row["worker"],
            row["state"],
            str(row["failures"]),
            format_duration(int(row["age_s"]) * 1000),
        )
    out.print(table)


async def _records(group: str | None) -> list[BreakerRecord]:
    backends = await open_backends()
    try:
        if group is not None and group not in {g.name for g in backends.topology.groups}:
            known = ", ".join(g.name for g in backends.topology.groups)
            raise SettingsError(f"no group {group!r} in the topology; groups: {known}")
        return await backends.store.list_breakers(group)
    finally:
        await backends.close()


def _view(record: BreakerRecord, now: datetime) -> dict[str, Any]:
    # A worker's clock may run a little ahead of ours: an age is never negative.
    age = max(0.0, (now - record.changed_at).total_seconds())
    return {
        "group": record.group,
        "dependency": record.dependency,
        "worker": record.worker,
        "state": record.state,
        "failures": record.failures,
        "changed_at": record.changed_at.isoformat(),
        "age_s": round(age, 3),
    }

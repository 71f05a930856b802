"""``taskctl breakers``: the circuit breakers of running workers, as they recorded them in the job store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskctl.context import Cell, JsonFlag, compiled_topology, in_store, out, print_rows

if TYPE_CHECKING:
    from jobstore.model import BreakerRecord


def breakers(
    group: Annotated[str | None, typer.Option("--group", help="Only this consumer group.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the circuit breakers of running workers.

    A breaker shows once it has opened: its state, failures and how long it has been so.
    """
    from topology.durations import format_duration

    if group is not None:
        compiled_topology(None).group(group)  # an unknown group is an error, not an empty list
    now = datetime.now(UTC)
    rows = [_view(record, now) for record in in_store(lambda s: s.list_breakers(group))]
    if not rows and not as_json:
        where = f" in group {group}" if group else ""
        out().print(f"no circuit breakers recorded{where}: no running worker's breaker has opened")
        return
    columns: list[tuple[str, Cell]] = [
        *[("dependency", "dependency"), ("state", "state"), ("group", "group")],
        *[("worker", "worker"), ("failures", "failures")],
        ("since", lambda row: format_duration(int(row["age_s"]) * 1000)),
    ]
    print_rows(rows, columns, whole=2, as_json=as_json)


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

"""``taskctl breakers``: the circuit breakers of running workers, as they recorded them in the job store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskctl.context import JsonFlag, compiled_topology, in_store, out, print_json, print_table

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
    if as_json:
        print_json(rows)
        return
    if not rows:
        where = f" in group {group}" if group else ""
        out().print(f"no circuit breakers recorded{where}: no running worker's breaker has opened")
        return
    table = [
        [
            row["dependency"],
            row["state"],
            row["group"],
            row["worker"],
            str(row["failures"]),
            format_duration(int(row["age_s"]) * 1000),
        ]
        for row in rows
    ]
    headers = ("dependency", "state", "group", "worker", "failures", "since")
    print_table(headers, table, whole=2)


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

"""Generate taskq's Grafana dashboards into grafana/dashboards/*.json.

    python grafana/build_dashboards.py          # write the JSON files
    python grafana/build_dashboards.py --check  # exit 1 if the committed JSON is stale

The metric names are the ones the code defines (docs/observability.md explains each panel).
Every query filters with ``label=~"$var"``: the variables' "All" value is ``.*``.
Each dashboard is built row by row, one function per row.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from dashboard_autoscaler import autoscaler
from dashboard_dlq import dead_letters
from dashboard_group import group_drill_down
from dashboard_overview import overview
from panels import Json

OUT = Path(__file__).resolve().parent / "dashboards"


DASHBOARDS: dict[str, Callable[[], Json]] = {
    "taskq-overview.json": overview,
    "taskq-group.json": group_drill_down,
    "taskq-dlq.json": dead_letters,
    "taskq-autoscaler.json": autoscaler,
}


def main(argv: list[str]) -> int:
    """Write the dashboards, or with ``--check`` report those whose file differs."""
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        if not check:
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    if stale:
        print(f"stale: {', '.join(stale)}; run python grafana/build_dashboards.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

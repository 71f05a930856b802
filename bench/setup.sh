#!/usr/bin/env bash
# Create .venv-bench: taskq with its pinned dependencies, plus the peers the benchmarks compare
# it with (bench/requirements.txt). The peers stay out of taskq's own venv and dependencies.
# Usage: bash bench/setup.sh    then: .venv-bench/bin/python bench/peers.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TASKQ_BENCH_VENV:-$ROOT/.venv-bench}"
PYTHON="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT"
# The same constraints again: a peer that wanted another version of one of taskq's pins would
# make this step fail instead of quietly changing what taskq runs on.
"$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -r "$ROOT/bench/requirements.txt"
"$VENV/bin/python" -m pip check
echo "ready: $VENV/bin/python bench/peers.py --help" >&2

"""Log redaction on crafted input: the backtracking patterns it replaced against the linear one.

Usage: .venv/bin/python bench/redaction.py [--rounds 5] [--sizes 250,500,1000,2000]

Each input repeats one hostile unit to the given length (the shapes that made the old
patterns backtrack: a run of secret words, a dotted run before "://", a long word run). For
every size the two redactors run in interleaved rounds, on CPU time of this thread; each cell
is the median with min..max, and the ratio old/new of the medians. The old one grows with the
square of the length (or worse), the new one with the length; the largest size is skipped for
the old one when a round of it would take more than ``--cap`` seconds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable

from telemetry.redaction import redact_text

_WORDS = r"password|passwd|secret|token|authorization|signature|api[_-]?key|cookie|credential"
_URL = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^/\s]*@", re.IGNORECASE)
_KEY = re.compile(
    rf"""([\w-]*(?:{_WORDS})[\w-]*["']?\s*[:=]\s*["']?)"""
    r"""(?:(?:bearer|basic)\s+)?[^\s"',;&}\]]+""",
    re.IGNORECASE,
)
_INPUT = re.compile(r"(input_value=).*?(?=, input_type=)")


def old_redact_text(text: str) -> str:
    """Redact as the backtracking patterns did (the baseline)."""
    text = _URL.sub(r"\1:***@", text)
    text = _INPUT.sub(r"\g<1>***", text)
    return _KEY.sub(r"\g<1>***", text)


UNITS = {"secret words": "token", "dotted scheme": "a.", "word run": "secret-"}


def cpu_ms(redact: Callable[[str], str], text: str) -> float:
    began = time.thread_time()
    redact(text)
    return (time.thread_time() - began) * 1000


def cell(samples: list[float]) -> str:
    return f"{statistics.median(samples):9.2f} ({min(samples):.2f}..{max(samples):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="250,500,1000,2000")
    parser.add_argument("--cap", type=float, default=5.0, help="seconds one old round may take")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{'input':14} {'chars':>6} {'old ms (min..max)':>24} {'new ms (min..max)':>22} {'old/new':>8}"
    )
    for name, unit in UNITS.items():
        skip_old = False
        for size in sizes:
            text = (unit * (size // len(unit) + 1))[:size]
            old: list[float] = []
            new: list[float] = []
            for _ in range(args.rounds):
                if not skip_old:
                    old.append(cpu_ms(old_redact_text, text))
                    skip_old = old[-1] / 1000 > args.cap
                new.append(cpu_ms(redact_text, text))
            ratio = statistics.median(old) / max(statistics.median(new), 1e-6) if old else 0
            shown = cell(old) if old else f"{'skipped':>9}"
            print(f"{name:14} {size:6} {shown:>24} {cell(new):>22} {ratio:8.0f}")


if __name__ == "__main__":
    main()

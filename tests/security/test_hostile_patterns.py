"""Hostile input against pattern matching: redaction and DLQ filters take linear time."""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from telemetry.redaction import redact_text
from tests.logs.test_redaction import PIECES

SIZE = 100_000
BUDGET_S = 0.05


def _cpu_seconds_to_redact(text: str) -> float:
    # CPU time of this thread: other processes on a busy machine do not count against it.
    began = time.thread_time()
    redact_text(text)
    return time.thread_time() - began


@settings(max_examples=100)
@given(st.lists(PIECES, min_size=1, max_size=12).map("".join))
@example("token")  # 1,000 characters of it cost the backtracking pattern over a second
@example("secret-")
@example("a.")
@example("://u:p@h")
@example("input_value=")
@example("Authorization: Bearer x")
def test_any_100_kb_log_line_is_redacted_in_under_50_ms(unit: str):
    # Backtracking blows up on repetition, so each example repeats a hostile unit to 100 kB.
    text = (unit * (SIZE // len(unit) + 1))[:SIZE]
    assert _cpu_seconds_to_redact(text) < BUDGET_S

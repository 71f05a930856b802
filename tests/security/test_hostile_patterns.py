"""Hostile input against pattern matching: redaction and DLQ filters take linear time."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consumers.dispatch import DeadReason, dead
from consumers.dlq import DeadFilter, DeadLetter
from telemetry.redaction import redact_text
from tests.logs.test_redaction import PIECES
from tests.security.stack import Stack
from topology.envelope import Envelope

SIZE = 100_000
# Linear time costs about 40 ms on a quiet machine for the worst unit below; a backtracking
# pattern costs seconds, so a budget with room for a busy machine still tells them apart.
BUDGET_S = 0.2


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
def test_any_100_kb_log_line_is_redacted_in_under_200_ms(unit: str):
    # Backtracking blows up on repetition, so each example repeats a hostile unit to 100 kB.
    text = (unit * (SIZE // len(unit) + 1))[:SIZE]
    assert _cpu_seconds_to_redact(text) < BUDGET_S


def _letter(error: str) -> DeadLetter:
    return DeadLetter("01J", "work.a", "exhausted", error, 1, None, None)


def test_the_dlq_error_filter_is_plain_text_never_a_pattern():
    now = datetime.now(UTC)
    hostile = DeadFilter(error="(a+)+!")
    # As a regular expression this needs about 2^1000 steps against the first letter.
    assert not hostile(_letter("a" * 1000), now)
    assert hostile(_letter("ValueError: got (a+)+! from the parser"), now)
    assert not DeadFilter(error="a.*b")(_letter("aXXb"), now)


@pytest.mark.rabbitmq
async def test_the_admin_dlq_filter_answers_a_hostile_pattern_at_once(api_stack: Stack):
    publisher = api_stack.app.state.services.publisher
    for i, error in enumerate(("a" * 990, "ValueError: (a+)+! is not a number")):
        envelope = Envelope.new("work.a", {"n": i})
        decision = dead(
            envelope, DeadReason.EXHAUSTED, error, group="work", topology=api_stack.topology
        )
        assert decision.envelope is not None
        assert decision.route is not None
        await publisher.publish(decision.envelope, decision.route)
    # Bounded, so a filter that blocked the event loop would fail here instead of hanging.
    async with asyncio.timeout(10):
        listed, health = await asyncio.gather(
            api_stack.client.get("/admin/dlq/work", params={"error": "(a+)+!"}),
            api_stack.client.get("/healthz"),
        )
    assert listed.status_code == 200, listed.text
    assert [row["error"] for row in listed.json()["letters"]] == [
        "ValueError: (a+)+! is not a number"
    ]
    assert health.status_code == 200
    too_long = await api_stack.client.get("/admin/dlq/work", params={"error": "x" * 1001})
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "error"
    assert await api_stack.occupied() == {"taskq.work.dlq": 2}  # listed, and left in place

import random
from datetime import UTC, datetime, timedelta

import pytest

from consumers.dispatch import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    MAX_ERROR_CHARS,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    Action,
    DeadReason,
    attempts_left,
    dead,
    describe_error,
    failed,
    succeeded,
)
from consumers.handlers import Permanent, Retry
from tests.fakes.publisher import InMemoryPublisher
from topology import names
from topology.envelope import Envelope
from topology.errors import ContractError
from topology.spec import Jitter, RetryPolicy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def policy(**changes) -> RetryPolicy:
    fields = {"max_attempts": 3, "base": "1s", "factor": 2.0, "max": "1m", "jitter": Jitter.NONE}
    return RetryPolicy(**(fields | changes))


def decide(topology, envelope, error, **changes):
    return failed(
        envelope, error, group="email", policy=policy(**changes), topology=topology, now=NOW
    )


def test_success_is_a_plain_ack():
    assert succeeded().action is Action.ACK


def test_a_failure_with_attempts_left_is_retried_through_the_right_tier(topology):
    job = Envelope.new("email", {"n": 1}, attempt=2)
    decision = decide(topology, job, RuntimeError("smtp down"))
    assert decision.action is Action.RETRY
    assert decision.delay_ms == 2000
    assert decision.envelope.attempt == 3
    assert decision.envelope.not_before == NOW + timedelta(seconds=2)
    assert decision.envelope.id == job.id
    assert decision.envelope.idempotency_key == job.idempotency_key
    assert decision.route.exchange == "taskq.retry"
    assert decision.route.headers[names.DELAY_HEADER] == "2s"
    assert decision.error == "RuntimeError: smtp down"


def test_retry_signal_sets_its_own_delay(topology):
    decision = decide(topology, Envelope.new("email"), Retry("rate limited", delay=30))
    assert decision.action is Action.RETRY
    assert decision.delay_ms == 30_000
    assert decision.route.headers[names.DELAY_HEADER] == "16s"  # the longest tier that fits


def test_the_last_attempt_goes_to_the_dlq_with_reason_error_attempts_and_routing_key(topology):
    job = Envelope.new("email.welcome", attempt=3)
    decision = decide(topology, job, ValueError("bad template"))
    assert decision.action is Action.DEAD
    assert decision.route.exchange == "taskq.dlx"
    assert decision.route.routing_key == "email"
    assert decision.route.headers == {
        REASON_HEADER: "exhausted",
        ERROR_HEADER: "ValueError: bad template",
        ATTEMPTS_HEADER: 3,
        ROUTING_KEY_HEADER: "email.welcome",
    }


def test_a_job_can_carry_its_own_attempt_limit(topology):
    job = Envelope.new("email", attempt=3, max_attempts=5)
    assert decide(topology, job, RuntimeError("x")).action is Action.RETRY
    assert attempts_left(job, policy()) == 2


@pytest.mark.parametrize(
    ("error", "reason"),
    [(Permanent("no such user"), "permanent"), (ContractError("bad payload"), "contract")],
)
def test_permanent_and_contract_failures_go_to_the_dlq_at_once(topology, error, reason):
    decision = decide(topology, Envelope.new("email", attempt=1), error)
    assert decision.action is Action.DEAD
    assert decision.route.headers[REASON_HEADER] == reason


async def test_dead_letters_land_in_the_group_dlq_with_their_headers(topology):
    publisher = InMemoryPublisher(topology)
    decision = dead(
        Envelope.new("email"),
        DeadReason.POISON,
        "crashed 5 times",
        group="email",
        topology=topology,
    )
    await publisher.publish(decision.envelope, decision.route)
    (published,) = publisher.published
    assert published.queue == "taskq.email.dlq"
    assert published.route.headers[REASON_HEADER] == "poison"


def test_jittered_retries_spread_within_the_policy(topology):
    rng = random.Random(3)
    delays = {
        failed(
            Envelope.new("email", attempt=2),
            RuntimeError("x"),
            group="email",
            policy=policy(jitter=Jitter.FULL),
            topology=topology,
            now=NOW,
            rng=rng,
        ).delay_ms
        for _ in range(200)
    }
    assert len(delays) > 100
    assert all(0 <= d <= 2000 for d in delays)


def test_error_text_is_bounded():
    text = describe_error(RuntimeError("x" * 5000))
    assert len(text) == MAX_ERROR_CHARS
    assert text.startswith("RuntimeError: xxx")

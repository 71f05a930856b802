"""``decide``: every kind of delivery, at every point, to the one action that follows."""

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.dispatch import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    HELD_RETRY_MS,
    MAX_ERROR_CHARS,
    PUBLISHES,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    Act,
    Broken,
    DeadReason,
    Facts,
    Failed,
    Policy,
    Succeeded,
    dead,
    decide,
    describe_error,
)
from consumers.handlers import Permanent, Retry
from jobstore.model import JobRecord, JobStatus, RunStarted, StartOutcome
from tests.fakes.publisher import InMemoryPublisher
from topology import names
from topology.compiled import compile_topology
from topology.envelope import Envelope
from topology.errors import ContractError, PublishNackedError, StoreError
from topology.loader import load_topology
from topology.spec import Jitter, Priority, RetryPolicy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DEFAULT = compile_topology(load_topology())
POISON = 5


def retry(**changes) -> RetryPolicy:
    fields = {"max_attempts": 3, "base": "1s", "factor": 2.0, "max": "1m", "jitter": Jitter.NONE}
    return RetryPolicy(**(fields | changes))


@pytest.fixture
def policy(topology) -> Policy:
    return Policy("email", retry(), topology, POISON)


def record(envelope: Envelope, status: JobStatus = JobStatus.RUNNING) -> JobRecord:
    return JobRecord(envelope.id, envelope.type, status, Priority.MEDIUM, NOW, NOW)


def run(envelope: Envelope, deliveries: int | None = None) -> RunStarted:
    count = envelope.attempt if deliveries is None else deliveries
    return RunStarted(StartOutcome.RUN, count, record(envelope))


def after(policy, envelope, error):
    return decide(Facts(envelope, start=run(envelope), outcome=Failed(error)), policy, NOW)


def test_an_undecodable_message_is_rejected_to_the_dlq(policy):
    action = decide(Facts(None, undecodable="not JSON"), policy, NOW)
    assert (action.act, action.reason) == (Act.REJECT, DeadReason.CONTRACT)
    assert action.status is JobStatus.DEAD


def test_a_new_delivery_is_claimed_first(policy):
    assert decide(Facts(Envelope.new("email")), policy, NOW).act is Act.CLAIM


def test_an_early_delayed_job_is_forwarded_through_a_tier_unchanged(policy):
    job = Envelope.new("email", not_before=NOW + timedelta(seconds=3))
    action = decide(Facts(job), policy, NOW)
    assert action.act is Act.FORWARD
    assert action.envelope == job
    assert action.route.exchange == "taskq.retry"


def test_an_unknown_type_is_dead_at_once_as_a_contract_failure(policy):
    action = decide(Facts(Envelope.new("email.nobody"), handled=False), policy, NOW)
    assert (action.act, action.reason) == (Act.DEAD, DeadReason.CONTRACT)
    assert action.route.headers[REASON_HEADER] == "contract"


def test_an_open_breaker_parks_the_job_without_spending_an_attempt(policy):
    job = Envelope.new("email", attempt=2)
    action = decide(Facts(job, blocked_ms=4000), policy, NOW)
    assert (action.act, action.delay_ms) == (Act.FORWARD, 4000)
    assert action.envelope.attempt == 2
    assert action.status is None


@pytest.mark.parametrize(
    ("status", "act"),
    [
        (JobStatus.SUCCEEDED, Act.SKIP),
        (JobStatus.DEAD, Act.SKIP),
        (JobStatus.FAILED, Act.SKIP),
        (JobStatus.CANCELLED, Act.CANCEL),
    ],
)
def test_a_job_that_ended_is_acked_unrun(policy, status, act):
    job = Envelope.new("email")
    start = RunStarted(StartOutcome.SETTLED, 1, record(job, status))
    action = decide(Facts(job, start=start), policy, NOW)
    assert action.act is act
    assert action.status is None


def test_a_job_another_run_holds_is_looked_at_again_after_a_tier(policy):
    job = Envelope.new("email")
    action = decide(Facts(job, start=RunStarted(StartOutcome.HELD, 1)), policy, NOW)
    assert (action.act, action.delay_ms) == (Act.FORWARD, HELD_RETRY_MS)


@pytest.mark.parametrize(("attempt", "deliveries"), [(1, 1), (1, POISON), (3, 3 + POISON - 1)])
def test_a_started_run_runs_below_the_poison_bound(policy, attempt, deliveries):
    job = Envelope.new("email", attempt=attempt)
    assert decide(Facts(job, start=run(job, deliveries)), policy, NOW).act is Act.RUN


@pytest.mark.parametrize(("attempt", "deliveries"), [(1, 1 + POISON), (2, 2 + POISON + 3)])
def test_a_job_started_too_often_is_dead_as_poison(policy, attempt, deliveries):
    job = Envelope.new("email", attempt=attempt)
    action = decide(Facts(job, start=run(job, deliveries)), policy, NOW)
    assert (action.act, action.reason) == (Act.DEAD, DeadReason.POISON)


def test_a_job_without_a_row_runs_however_often_it_came(policy):
    job = Envelope.new("email")
    start = RunStarted(StartOutcome.RUN, 0, None)
    assert decide(Facts(job, start=start), policy, NOW).act is Act.RUN


def test_success_records_the_result_and_acks(policy):
    job = Envelope.new("email")
    action = decide(Facts(job, start=run(job), outcome=Succeeded({"ok": 1})), policy, NOW)
    assert (action.act, action.result, action.status) == (Act.ACK, {"ok": 1}, JobStatus.SUCCEEDED)


def test_a_failure_with_attempts_left_is_retried_through_the_right_tier(policy):
    job = Envelope.new("email", {"n": 1}, attempt=2)
    action = after(policy, job, RuntimeError("smtp down"))
    assert action.act is Act.RETRY
    assert action.status is JobStatus.RETRYING
    assert action.delay_ms == 2000
    assert action.envelope.attempt == 3
    assert action.envelope.not_before == NOW + timedelta(seconds=2)
    assert action.envelope.id == job.id
    assert action.envelope.idempotency_key == job.idempotency_key
    assert action.route.exchange == "taskq.retry"
    assert action.route.headers[names.DELAY_HEADER] == "2s"
    assert action.error == "RuntimeError: smtp down"


def test_retry_signal_sets_its_own_delay(policy):
    action = after(policy, Envelope.new("email"), Retry("rate limited", delay=30))
    assert action.act is Act.RETRY
    assert action.delay_ms == 30_000
    assert action.route.headers[names.DELAY_HEADER] == "16s"  # the longest tier that fits


def test_the_last_attempt_goes_to_the_dlq_with_reason_error_attempts_and_routing_key(policy):
    job = Envelope.new("email.welcome", attempt=3)
    action = after(policy, job, ValueError("bad template"))
    assert action.act is Act.DEAD
    assert action.route.exchange == "taskq.dlx"
    assert action.route.routing_key == "email"
    assert action.route.headers == {
        REASON_HEADER: "exhausted",
        ERROR_HEADER: "ValueError: bad template",
        ATTEMPTS_HEADER: 3,
        ROUTING_KEY_HEADER: "email.welcome",
    }


def test_a_job_can_carry_its_own_attempt_limit(policy):
    job = Envelope.new("email", attempt=3, max_attempts=5)
    assert after(policy, job, RuntimeError("x")).act is Act.RETRY


@pytest.mark.parametrize(
    ("error", "reason"),
    [(Permanent("no such user"), "permanent"), (ContractError("bad payload"), "contract")],
)
def test_permanent_and_contract_failures_go_to_the_dlq_at_once(policy, error, reason):
    action = after(policy, Envelope.new("email", attempt=1), error)
    assert action.act is Act.DEAD
    assert action.route.headers[REASON_HEADER] == reason


@pytest.mark.parametrize("failed", [Act.ACK, Act.RETRY, Act.FORWARD, Act.CLAIM, Act.SKIP])
def test_a_failure_to_carry_out_requeues_the_delivery(policy, failed):
    job = Envelope.new("email")
    broken = Broken(StoreError("payload strings may not contain NUL"), failed)
    action = decide(Facts(job, start=run(job), outcome=broken), policy, NOW)
    assert action.act is Act.REQUEUE
    assert action.error == "StoreError: payload strings may not contain NUL"
    assert action.status is None


@pytest.mark.parametrize("failed", [Act.DEAD, Act.REJECT])
def test_a_dead_letter_that_cannot_be_published_is_rejected_as_it_is(policy, failed):
    job = Envelope.new("email")
    broken = Broken(ContractError("header taskq-note is longer than 255 bytes"), failed)
    action = decide(Facts(job, outcome=broken), policy, NOW)
    assert (action.act, action.reason, action.status) == (
        Act.REJECT,
        DeadReason.POISON,
        JobStatus.DEAD,
    )


def test_a_dead_letter_the_full_dlq_refuses_goes_back_to_its_queue(policy):
    # Rejected, the queue's own dead-lettering would drop it at the full DLQ.
    job = Envelope.new("email")
    broken = Broken(PublishNackedError("the broker refused the message"), Act.DEAD)
    action = decide(Facts(job, start=run(job), outcome=broken), policy, NOW)
    assert (action.act, action.status) == (Act.REQUEUE, None)
    assert action.error == "PublishNackedError: the broker refused the message"


async def test_dead_letters_land_in_the_group_dlq_with_their_headers(topology):
    publisher = InMemoryPublisher(topology)
    action = dead(
        Envelope.new("email"),
        DeadReason.POISON,
        "crashed 5 times",
        group="email",
        topology=topology,
    )
    await publisher.publish(action.envelope, action.route)
    (published,) = publisher.published
    assert published.queue == "taskq.email.dlq"
    assert published.route.headers[REASON_HEADER] == "poison"


def test_jittered_retries_spread_within_the_policy(policy):
    jittered = replace(policy, retry=retry(jitter=Jitter.FULL))
    rng = random.Random(3)
    job = Envelope.new("email", attempt=2)
    facts = Facts(job, start=run(job), outcome=Failed(RuntimeError("x")))
    delays = {decide(facts, jittered, NOW, rng).delay_ms for _ in range(200)}
    assert len(delays) > 100
    assert all(0 <= d <= 2000 for d in delays)


def test_error_text_is_bounded():
    text = describe_error(RuntimeError("x" * 5000))
    assert len(text) == MAX_ERROR_CHARS
    assert text.startswith("RuntimeError: xxx")


ERRORS = st.sampled_from(
    [
        RuntimeError("x"),
        Permanent("no"),
        ContractError("bad"),
        Retry("later", delay=1),
        TimeoutError(),
    ]
)
OUTCOMES = st.one_of(
    st.none(),
    st.builds(Succeeded, st.integers()),
    st.builds(Failed, ERRORS),
    st.builds(Broken, ERRORS, st.sampled_from(list(Act))),
)
STARTS = st.one_of(
    st.none(),
    st.builds(
        RunStarted,
        st.sampled_from(list(StartOutcome)),
        st.integers(min_value=0, max_value=40),
        st.none(),
    ),
)


@given(
    decodable=st.booleans(),
    attempt=st.integers(min_value=1, max_value=10),
    max_attempts=st.none() | st.integers(min_value=1, max_value=10),
    early=st.booleans(),
    handled=st.booleans(),
    blocked=st.none() | st.integers(min_value=1, max_value=60_000),
    start=STARTS,
    outcome=OUTCOMES,
    ended=st.sampled_from(list(JobStatus)),
)
def test_every_delivery_gets_exactly_one_well_formed_action(
    decodable, attempt, max_attempts, early, handled, blocked, start, outcome, ended
):
    policy = Policy("email", retry(), DEFAULT, POISON)
    job = Envelope.new(
        "email",
        attempt=attempt,
        max_attempts=max_attempts,
        not_before=NOW + timedelta(seconds=5) if early else None,
    )
    if start is not None and start.outcome is not StartOutcome.HELD:
        start = replace(start, job=record(job, ended))
    facts = Facts(job if decodable else None, handled, blocked, start, outcome)
    action = decide(facts, policy, NOW, random.Random(1))
    # What is published is the job itself (or its next attempt), through a real route.
    assert (action.act in PUBLISHES) == (action.envelope is not None and action.route is not None)
    if action.envelope is not None:
        assert action.envelope.id == job.id
        assert action.envelope.attempt in (attempt, attempt + 1)
    if action.act is Act.RETRY:
        assert action.envelope.attempt == attempt + 1
    # Nothing is dropped: every path either runs, hands over, acks, or dead-letters with a reason.
    if action.act in (Act.DEAD, Act.REJECT):
        assert action.reason is not None
        assert action.status is JobStatus.DEAD
    if not decodable:
        assert action.act is Act.REJECT
    elif isinstance(outcome, Broken):
        assert action.act in (Act.REQUEUE, Act.REJECT)
    elif start is None:
        assert action.act in (Act.CLAIM, Act.FORWARD, Act.DEAD)
    elif outcome is None:
        assert action.act in (Act.RUN, Act.SKIP, Act.CANCEL, Act.FORWARD, Act.DEAD)
    else:
        assert action.act in (Act.ACK, Act.RETRY, Act.DEAD)

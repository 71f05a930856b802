"""What happens to a delivery: one pure function, ``decide``, from what is known about it to an ``Action``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from consumers.handlers import Permanent, Retry
from jobstore.model import JobStatus, RunStarted, StartOutcome
from topology.compiled import CompiledTopology
from topology.envelope import Envelope
from topology.errors import ContractError, PublishNackedError
from topology.routes import Route, delay_route, next_hop
from topology.spec import Jitter, RetryPolicy

MAX_ERROR_CHARS = 1000  # error text travels in AMQP headers: keep them small
HELD_RETRY_MS = 1000  # another worker holds the job's claim: look again after one tier

REASON_HEADER = "taskq-dead-reason"
ERROR_HEADER = "taskq-last-error"
ATTEMPTS_HEADER = "taskq-attempts"
ROUTING_KEY_HEADER = "taskq-routing-key"


class Act(StrEnum):
    """What the executor does with a delivery."""

    CLAIM = "claim"  # start the job's run in the store, then decide again
    RUN = "run"  # run the handler, then decide again with its outcome
    ACK = "ack"  # the handler returned: record the result, ack
    SKIP = "skip"  # the job ended already (a redelivery): ack without running
    CANCEL = "cancel"  # the job was cancelled: ack without running
    FORWARD = "forward"  # publish the job on through a delay tier unchanged, ack
    RETRY = "retry"  # publish the next attempt through a delay tier, record retrying, ack
    DEAD = "dead"  # publish to the group's DLQ with the reason, record dead, ack
    REJECT = "reject"  # reject unrequeued: the work queue dead-letters the message as it is
    REQUEUE = "requeue"  # carrying out failed: give the claim back, nack with requeue


class DeadReason(StrEnum):
    """Why a job was dead-lettered (the ``taskq-dead-reason`` header)."""

    EXHAUSTED = "exhausted"  # every attempt failed
    PERMANENT = "permanent"  # the handler said no attempt can succeed
    CONTRACT = "contract"  # undecodable, unknown type, or a payload the handler cannot take
    POISON = "poison"  # started too often without finishing (it crashes its worker, or
    # carrying out its outcome keeps failing)


# Made per delivery, several times over: plain slotted dataclasses (a frozen one costs five
# times as much to build), never changed once made.
@dataclass(slots=True)
class Action:
    """What to do, with what to publish first (FORWARD, RETRY, DEAD) and what to record."""

    act: Act
    envelope: Envelope | None = None
    route: Route | None = None
    error: str | None = None
    reason: DeadReason | None = None
    delay_ms: int = 0
    result: Any = None

    @property
    def status(self) -> JobStatus | None:
        """Return the status the job's row moves to (``None``: it stays as it is)."""
        return _STATUS.get(self.act)


_STATUS = {
    Act.ACK: JobStatus.SUCCEEDED,
    Act.RETRY: JobStatus.RETRYING,
    Act.DEAD: JobStatus.DEAD,
    Act.REJECT: JobStatus.DEAD,
}
PUBLISHES = frozenset({Act.FORWARD, Act.RETRY, Act.DEAD})
"""The actions that publish before the original is acked."""


@dataclass(slots=True)
class Succeeded:
    """The handler returned ``result`` (JSON)."""

    result: Any = None


@dataclass(slots=True)
class Failed:
    """The handler raised ``error`` (or timed out, or its payload did not fit)."""

    error: BaseException


@dataclass(slots=True)
class Broken:
    """Carrying out ``failed`` went wrong: the store or the broker refused it, or is down."""

    error: BaseException
    failed: Act


Outcome = Succeeded | Failed | Broken


@dataclass(slots=True)
class Facts:
    """What is known about one delivery so far."""

    envelope: Envelope | None  # None: the body could not be decoded
    handled: bool = True  # a registered handler takes its type
    blocked_ms: int | None = None  # a dependency's breaker is open: park it this long
    start: RunStarted | None = None  # None: no run started yet
    outcome: Outcome | None = None  # None: nothing ran or failed yet
    undecodable: str = ""  # why the body could not be decoded


@dataclass(frozen=True, slots=True)
class Policy:
    """The group's rules: where its dead letters go, how it retries, when a job is poison."""

    group: str
    retry: RetryPolicy
    topology: CompiledTopology
    poison_deliveries: int


def decide(facts: Facts, policy: Policy, now: datetime, rng: random.Random | None = None) -> Action:
    """Return what happens next to the delivery ``facts`` describes."""
    envelope = facts.envelope
    if envelope is None:
        error = f"ContractError: {facts.undecodable}"
        return Action(Act.REJECT, error=error, reason=DeadReason.CONTRACT)
    outcome = facts.outcome
    if isinstance(outcome, Broken):
        return _broken(outcome)
    if facts.start is None:
        return _unstarted(envelope, facts, policy, now)
    if outcome is None:
        return _started(envelope, facts.start, policy)
    if isinstance(outcome, Succeeded):
        return Action(Act.ACK, result=outcome.result)
    return failed(envelope, outcome.error, policy, now, rng)


def _broken(outcome: Broken) -> Action:
    text = describe_error(outcome.error)
    # A DLQ that refused the dead letter is full (dlq.max_length, reject-publish), where the
    # queue's own dead-lettering would drop it: like any other failure, it goes back to its
    # queue (bounded: the redelivery's start is counted, and too many starts make it poison).
    full = isinstance(outcome.error, PublishNackedError)
    if outcome.failed is Act.REJECT or (outcome.failed is Act.DEAD and not full):
        # Even the dead letter cannot be published: the queue's own dead-lettering takes the
        # message as it is (nothing to encode), and the store keeps the reason.
        return Action(Act.REJECT, error=text, reason=DeadReason.POISON)
    return Action(Act.REQUEUE, error=text)


def _unstarted(envelope: Envelope, facts: Facts, policy: Policy, now: datetime) -> Action:
    hop = next_hop(policy.topology, envelope, now)
    if hop is not None:  # a delayed job early at its queue: on through the next tier
        return Action(Act.FORWARD, envelope, hop)
    if not facts.handled:
        error = f"ContractError: no handler is registered for job type {envelope.type!r}"
        return dead(
            envelope, DeadReason.CONTRACT, error, group=policy.group, topology=policy.topology
        )
    if facts.blocked_ms is not None:
        # Parked, not failed: the job waits out the cooldown without spending an attempt.
        route = delay_route(policy.topology, envelope, facts.blocked_ms)
        return Action(Act.FORWARD, envelope, route, delay_ms=facts.blocked_ms)
    return Action(Act.CLAIM)


def _started(envelope: Envelope, start: RunStarted, policy: Policy) -> Action:
    if start.outcome is StartOutcome.SETTLED:
        cancelled = start.job is not None and start.job.status is JobStatus.CANCELLED
        return Action(Act.CANCEL if cancelled else Act.SKIP)
    if start.outcome is StartOutcome.HELD:
        route = delay_route(policy.topology, envelope, HELD_RETRY_MS)
        return Action(Act.FORWARD, envelope, route, delay_ms=HELD_RETRY_MS)
    # Each attempt starts once; the surplus is restarts after a crash, a kill, or a failure
    # to carry out its outcome (a job held by a live claim is not counted).
    if start.job is not None and start.deliveries - envelope.attempt >= policy.poison_deliveries:
        error = f"started {start.deliveries} times without finishing; it may crash its worker"
        if start.job.last_error:  # what went wrong carrying out its last outcome, if anything
            error = _cut(f"{error}; last error: {start.job.last_error}")
        return dead(
            envelope, DeadReason.POISON, error, group=policy.group, topology=policy.topology
        )
    return Action(Act.RUN)


def failed(
    envelope: Envelope,
    error: BaseException,
    policy: Policy,
    now: datetime,
    rng: random.Random | None = None,
) -> Action:
    """Return what to do with a job whose handler raised ``error``."""
    text = describe_error(error)
    reason = None
    if isinstance(error, Permanent):
        reason = DeadReason.PERMANENT
    elif isinstance(error, ContractError):
        reason = DeadReason.CONTRACT
    elif envelope.attempt >= attempts_allowed(policy.retry, envelope.max_attempts):
        reason = DeadReason.EXHAUSTED
    if reason is not None:
        return dead(envelope, reason, text, group=policy.group, topology=policy.topology)
    asked = error.delay if isinstance(error, Retry) else None
    delay = (
        int(asked * 1000) if asked is not None else backoff_ms(policy.retry, envelope.attempt, rng)
    )
    following = envelope.model_copy(
        update={"attempt": envelope.attempt + 1, "not_before": now + timedelta(milliseconds=delay)}
    )
    route = delay_route(policy.topology, following, delay)
    return Action(Act.RETRY, following, route, error=text, delay_ms=delay)


def dead(
    envelope: Envelope, reason: DeadReason, error: str, *, group: str, topology: CompiledTopology
) -> Action:
    """Return the action that dead-letters ``envelope`` into ``group``'s DLQ, saying why."""
    headers: dict[str, str | int] = {
        REASON_HEADER: reason.value,
        ERROR_HEADER: error,
        ATTEMPTS_HEADER: envelope.attempt,
        ROUTING_KEY_HEADER: envelope.type,
    }
    route = Route(topology.dead_letter_exchange, group, headers)
    return Action(Act.DEAD, envelope, route, error=error, reason=reason)


def describe_error(error: BaseException) -> str:
    """Return ``Type: message``, cut to ``MAX_ERROR_CHARS`` (it travels in a header)."""
    return _cut(f"{type(error).__name__}: {error}")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def backoff_ms(policy: RetryPolicy, failed_attempt: int, rng: random.Random | None = None) -> int:
    """Return the delay in milliseconds before the attempt after ``failed_attempt`` (1-based)."""
    ceiling = policy.delay_ms(failed_attempt)
    draw = (rng or random).random()
    if policy.jitter is Jitter.FULL:
        return int(ceiling * draw)
    if policy.jitter is Jitter.EQUAL:
        half = ceiling / 2
        return int(half + half * draw)
    return ceiling


def attempts_allowed(policy: RetryPolicy, job_max_attempts: int | None) -> int:
    """Return how many attempts a job gets: its own ``max_attempts``, else the group's policy."""
    return job_max_attempts if job_max_attempts is not None else policy.max_attempts

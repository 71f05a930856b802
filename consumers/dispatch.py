"""What happens to a job after its handler ran: the decision the dispatcher then carries out.

Pure functions: given the envelope, the outcome and the group's policy they say *ack*,
*retry through this delay tier with this envelope*, or *dead-letter with these headers*. The
worker carries a decision out as a confirmed publish followed by the ack of the original, so
every hop is at-least-once and nothing is dropped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from consumers.handlers import Permanent, Retry
from consumers.retry import attempts_allowed, backoff_ms, may_retry
from topology.envelope import Envelope
from topology.errors import ContractError
from topology.model import CompiledTopology
from topology.routes import Route, delay_route
from topology.spec import RetryPolicy

MAX_ERROR_CHARS = 1000  # error text travels in AMQP headers: keep them small

REASON_HEADER = "taskq-dead-reason"
ERROR_HEADER = "taskq-last-error"
ATTEMPTS_HEADER = "taskq-attempts"
ROUTING_KEY_HEADER = "taskq-routing-key"


class Action(StrEnum):
    """What the dispatcher does with the original message after the handler ran."""

    ACK = "ack"  # done: record the result and ack
    RETRY = "retry"  # publish the next attempt to a delay tier, then ack
    DEAD = "dead"  # publish to the dead-letter exchange, then ack


class DeadReason(StrEnum):
    """Why a job was dead-lettered (the ``taskq-dead-reason`` header)."""

    EXHAUSTED = "exhausted"  # every attempt failed
    PERMANENT = "permanent"  # the handler said no attempt can succeed
    CONTRACT = "contract"  # undecodable, unknown type, or a payload the handler cannot take
    POISON = "poison"  # delivered too often without finishing (it crashes its worker)


@dataclass(frozen=True, slots=True)
class Decision:
    """The dispatcher's verdict, with what to publish first when it is not a plain ack."""

    action: Action
    envelope: Envelope | None = None
    route: Route | None = None
    delay_ms: int = 0
    error: str | None = None


def succeeded() -> Decision:
    """Return the decision for a handler that returned."""
    return Decision(Action.ACK)


def failed(
    envelope: Envelope,
    error: BaseException,
    *,
    group: str,
    policy: RetryPolicy,
    topology: CompiledTopology,
    now: datetime,
    rng: random.Random | None = None,
) -> Decision:
    """Return what to do with a job whose handler raised ``error``."""
    text = describe_error(error)
    if isinstance(error, Permanent):
        return dead(envelope, DeadReason.PERMANENT, text, group=group, topology=topology)
    if isinstance(error, ContractError):
        return dead(envelope, DeadReason.CONTRACT, text, group=group, topology=topology)
    if not may_retry(policy, envelope.attempt, envelope.max_attempts):
        return dead(envelope, DeadReason.EXHAUSTED, text, group=group, topology=topology)
    asked = error.delay if isinstance(error, Retry) else None
    delay = int(asked * 1000) if asked is not None else backoff_ms(policy, envelope.attempt, rng)
    following = envelope.model_copy(
        update={"attempt": envelope.attempt + 1, "not_before": now + timedelta(milliseconds=delay)}
    )
    return Decision(
        Action.RETRY,
        following,
        delay_route(topology, following, delay),
        delay_ms=delay,
        error=text,
    )


def dead(
    envelope: Envelope, reason: DeadReason, error: str, *, group: str, topology: CompiledTopology
) -> Decision:
    """Return the decision to dead-letter ``envelope`` into its group's DLQ, saying why."""
    headers: dict[str, str | int] = {
        REASON_HEADER: reason.value,
        ERROR_HEADER: error,
        ATTEMPTS_HEADER: envelope.attempt,
        ROUTING_KEY_HEADER: envelope.type,
    }
    return Decision(
        Action.DEAD, envelope, Route(topology.dead_letter_exchange, group, headers), error=error
    )


def attempts_left(envelope: Envelope, policy: RetryPolicy) -> int:
    """Return how many attempts the job has after the current one."""
    return max(0, attempts_allowed(policy, envelope.max_attempts) - envelope.attempt)


def describe_error(error: BaseException) -> str:
    """Return ``Type: message``, cut to ``MAX_ERROR_CHARS`` (it travels in a header)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"

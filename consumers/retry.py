"""Exponential backoff with jitter: how long a failed job waits before its next attempt.

The delay is computed here and realised by the broker (a delay tier), never by sleeping or by
holding an unacked message; jitter is applied here, when the tier is chosen, so retries of
jobs that failed together spread out instead of returning as a herd
(https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
"""

from __future__ import annotations

import random

from topology.spec import Jitter, RetryPolicy


def backoff_ms(policy: RetryPolicy, failed_attempt: int, rng: random.Random | None = None) -> int:
    """Return the delay in milliseconds before the attempt after ``failed_attempt`` (1-based).

    ``none`` gives ``min(base * factor^(n-1), max)``; ``full`` a uniform draw in ``[0, that]``;
    ``equal`` half of it plus a uniform draw in ``[0, half]``.
    """
    if failed_attempt < 1:
        raise ValueError(f"attempts count from 1, got {failed_attempt}")
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


def may_retry(policy: RetryPolicy, failed_attempt: int, job_max_attempts: int | None) -> bool:
    """Return whether a job whose attempt ``failed_attempt`` failed gets another one."""
    return failed_attempt < attempts_allowed(policy, job_max_attempts)

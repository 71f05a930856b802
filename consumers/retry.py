"""Exponential backoff with jitter: how long a failed job waits before its next attempt."""

from __future__ import annotations

import random

from topology.spec import Jitter, RetryPolicy


def backoff_ms(policy: RetryPolicy, failed_attempt: int, rng: random.Random | None = None) -> int:
    """Return the delay in milliseconds before the attempt after ``failed_attempt`` (1-based)."""
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

import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.dispatch import attempts_allowed, backoff_ms
from topology.spec import Jitter, RetryPolicy

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 50),
    base=st.integers(1, 60_000),
    factor=st.floats(1.0, 8.0),
    max=st.integers(60_000, 3_600_000),
    jitter=st.sampled_from(Jitter),
)


def policy(jitter: Jitter = Jitter.NONE, **changes) -> RetryPolicy:
    # Durations as text: a bare number in a topology file means seconds.
    fields = {"max_attempts": 8, "base": "1s", "factor": 2.0, "max": "15m", "jitter": jitter}
    return RetryPolicy(**(fields | changes))


def test_without_jitter_delays_double_until_the_cap():
    p = policy(max="10s")
    assert [backoff_ms(p, n) for n in range(1, 7)] == [1000, 2000, 4000, 8000, 10_000, 10_000]


@given(policies, st.integers(1, 60), st.integers(0, 2**32))
def test_every_delay_lies_between_zero_and_the_cap(p: RetryPolicy, attempt: int, seed: int):
    delay = backoff_ms(p, attempt, random.Random(seed))
    cap = p.delay_ms(attempt)
    assert 0 <= delay <= cap <= p.max
    if p.jitter is Jitter.EQUAL:
        assert delay >= cap // 2


@given(policies.filter(lambda p: p.jitter is Jitter.NONE), st.integers(1, 59))
def test_delays_never_decrease_without_jitter(p: RetryPolicy, attempt: int):
    assert backoff_ms(p, attempt) <= backoff_ms(p, attempt + 1)


@pytest.mark.parametrize("jitter", [Jitter.FULL, Jitter.EQUAL])
def test_jitter_really_spreads_the_delays(jitter: Jitter):
    rng = random.Random(7)
    delays = [backoff_ms(policy(jitter), 4, rng) for _ in range(500)]
    assert len(set(delays)) > 400
    assert statistics.pstdev(delays) > 500  # of a cap of 8000 ms


def test_attempts_come_from_the_job_else_the_policy():
    p = policy(max_attempts=3)
    assert attempts_allowed(p, None) == 3
    assert attempts_allowed(p, 5) == 5

from consumers.breaker import Breakers, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_at_the_threshold_and_refuses_until_the_cooldown():
    clock = Clock()
    breaker = CircuitBreaker("smtp", threshold=3, cooldown=10, clock=clock)
    for _ in range(2):
        breaker.failed()
    assert breaker.allow()
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    clock.now = 4
    assert breaker.retry_in() == 6


def test_half_open_lets_one_probe_through_and_its_outcome_decides():
    clock = Clock()
    breaker = CircuitBreaker("smtp", threshold=1, cooldown=10, clock=clock)
    breaker.failed()
    clock.now = 10
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # nobody else while it runs
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    clock.now = 20
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker("db", threshold=2)
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state is BreakerState.CLOSED


def test_breakers_are_per_dependency_and_report_the_blocking_one():
    breakers = Breakers(threshold=1, cooldown=60)
    breakers.get("smtp").failed()
    assert breakers.blocking(("db",)) is None
    blocking = breakers.blocking(("db", "smtp"))
    assert blocking is not None
    assert blocking.name == "smtp"


def test_on_change_hears_every_transition_and_nothing_else():
    clock = Clock()
    heard: list[tuple[str, BreakerState, int]] = []
    breakers = Breakers(
        threshold=2,
        cooldown=10,
        clock=clock,
        on_change=lambda b: heard.append((b.name, b.state, b.failures)),
    )
    smtp = breakers.get("smtp")
    smtp.failed()
    smtp.succeeded()  # closed stays closed: no transition
    smtp.failed()
    smtp.failed()  # the threshold: closed -> open
    smtp.failed()  # a straggler failing while open: still open
    assert not smtp.allow()
    clock.now = 10
    assert smtp.allow()  # open -> half-open, and the probe goes through
    smtp.failed()  # the probe failed: half-open -> open
    clock.now = 20
    assert smtp.allow()
    smtp.succeeded()  # half-open -> closed
    smtp.succeeded()
    assert heard == [
        ("smtp", BreakerState.OPEN, 2),
        ("smtp", BreakerState.HALF_OPEN, 3),
        ("smtp", BreakerState.OPEN, 4),
        ("smtp", BreakerState.HALF_OPEN, 4),
        ("smtp", BreakerState.CLOSED, 0),
    ]


def test_a_success_landing_while_open_closes_the_breaker_and_says_so():
    # A job that started before the breaker opened may still succeed after it did.
    heard: list[BreakerState] = []
    breaker = CircuitBreaker("db", threshold=1, on_change=lambda b: heard.append(b.state))
    breaker.failed()
    breaker.succeeded()
    assert heard == [BreakerState.OPEN, BreakerState.CLOSED]
    assert breaker.allow()


def test_breakers_without_a_callback_behave_as_before():
    breaker = CircuitBreaker("db", threshold=1, cooldown=0)
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN

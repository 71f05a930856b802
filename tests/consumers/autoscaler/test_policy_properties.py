import itertools
from dataclasses import replace

from hypothesis import assume, given
from hypothesis import strategies as st

from consumers.autoscaler.policy import PolicyConfig, PolicyState, decide, recommend
from consumers.autoscaler.signals import QueueSignals
from topology.spec import ScaleSpec


@st.composite
def scale_specs(draw) -> ScaleSpec:
    low = draw(st.integers(0, 20))
    high = draw(st.integers(max(low, 1), low + 40) | st.integers(max(low, 1), 1000))
    return ScaleSpec(min=low, max=high, backlog_per_worker=draw(st.integers(1, 2000)))


# Mostly slow rates, where the drain rule outvotes the backlog rule.
rates = st.just(0.0) | st.floats(0, 50) | st.floats(0, 1e5)
signals = st.builds(
    QueueSignals,
    ready=st.integers(0, 10**7),
    unacked=st.integers(0, 10**5),
    consumers=st.integers(0, 64),
    publish_rate=rates,
    ack_rate=rates,
    oldest_age=st.none() | st.floats(0, 1e6),
)
configs = st.builds(
    PolicyConfig,
    stabilization_s=st.integers(0, 600).map(float),
    activation=st.integers(0, 1000),
    drain_horizon_s=st.integers(1, 600).map(float),
)
NOW = 10_000.0
# Any state at all, including ones no earlier decision could have left (bounds changed,
# hand-built, clock went back): the invariants must hold regardless.
states = st.builds(
    PolicyState,
    desired=st.integers(0, 2000),
    history=st.lists(
        st.tuples(st.floats(NOW - 2000, NOW + 10), st.integers(0, 2000)), max_size=6
    ).map(tuple),
)
currents = st.integers(0, 2000)


@given(st.none() | signals, currents, scale_specs(), configs, states)
def test_the_decision_never_leaves_the_bounds(sig, current, bounds, config, state):
    decision = decide(sig, current, bounds, config, state, NOW)
    assert bounds.min <= decision.desired <= bounds.max
    assert decision.state.desired == decision.desired
    assert decision.reason


@given(
    signals, st.integers(0, 10**3) | st.integers(0, 10**6), currents, scale_specs(), configs, states
)
def test_more_backlog_never_gives_fewer_workers(sig, extra, current, bounds, config, state):
    more = replace(sig, ready=sig.ready + extra)
    less_decision = decide(sig, current, bounds, config, state, NOW)
    more_decision = decide(more, current, bounds, config, state, NOW)
    assert less_decision.desired <= more_decision.desired
    assert recommend(sig, bounds, config)[0] <= recommend(more, bounds, config)[0]


@given(signals, currents, scale_specs(), configs, states)
def test_scale_up_is_immediate(sig, current, bounds, config, state):
    decision = decide(sig, current, bounds, config, state, NOW)
    assert decision.desired >= recommend(sig, bounds, config)[0]


@given(signals, currents, scale_specs(), configs, st.integers(1, 30), st.integers(0, 20))
def test_a_steady_load_from_a_fresh_start_settles_after_at_most_one_change(
    sig, current, bounds, config, every, extra_ticks
):
    state, desired = PolicyState(), []
    ticks = int(config.stabilization_s // every) + 2 + extra_ticks
    for k in range(ticks):
        decision = decide(sig, current, bounds, config, state, NOW + k * every)
        state, current = decision.state, decision.desired
        desired.append(decision.desired)
    changes = sum(a != b for a, b in itertools.pairwise(desired))
    assert changes <= 1
    assert desired[-1] == recommend(sig, bounds, config)[0]


@given(signals, currents, scale_specs(), configs, states, st.integers(1, 30))
def test_a_steady_load_from_any_state_only_steps_down_then_never_changes(
    sig, current, bounds, config, state, every
):
    desired = []
    ticks = int((config.stabilization_s + 2010) // every) + 3  # past every entry of the state
    for k in range(ticks):
        decision = decide(sig, current, bounds, config, state, NOW + k * every)
        state, current = decision.state, decision.desired
        desired.append(decision.desired)
    assert desired == sorted(desired, reverse=True)
    settled = recommend(sig, bounds, config)[0]
    tail = int(config.stabilization_s // every) + 1
    assert desired[-tail:] == [settled] * tail


@given(signals, signals, currents, scale_specs(), configs, st.integers(1, 30))
def test_a_scale_down_waits_the_whole_window(high, low, current, bounds, config, every):
    assume(recommend(low, bounds, config)[0] < recommend(high, bounds, config)[0])
    first = decide(high, current, bounds, config, PolicyState(), NOW)
    state, peak = first.state, first.desired
    for k in range(1, int(config.stabilization_s // every) + 3):
        elapsed = k * every
        decision = decide(low, peak, bounds, config, state, NOW + elapsed)
        state = decision.state
        if elapsed <= config.stabilization_s:
            assert decision.desired == peak, (elapsed, decision.reason)
        else:
            assert decision.desired == recommend(low, bounds, config)[0]


@given(currents, scale_specs(), configs, states, st.integers(1, 20))
def test_unreadable_signals_hold_the_last_decision(current, bounds, config, state, outage):
    held = max(bounds.min, min(bounds.max, state.desired if state.history else current))
    for k in range(outage):
        decision = decide(None, current + k, bounds, config, state, NOW + 60.0 * k)
        assert decision.desired == held
        assert decision.reason.startswith("signals unavailable: holding")
        state = decision.state

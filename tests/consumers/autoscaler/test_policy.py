import math

import pytest

from consumers.autoscaler.policy import Decision, PolicyConfig, PolicyState, decide, recommend
from consumers.autoscaler.signals import QueueSignals
from topology.loader import parse_topology
from topology.spec import ScaleSpec

BOUNDS = ScaleSpec(min=1, max=8, backlog_per_worker=500)
ZERO_OK = ScaleSpec(min=0, max=8, backlog_per_worker=500)
CONFIG = PolicyConfig()


def sig(ready=0, unacked=0, *, consumers=1, publish_rate=0.0, ack_rate=0.0) -> QueueSignals:
    return QueueSignals(ready, unacked, consumers, publish_rate, ack_rate, None)


def run(*ticks, bounds=BOUNDS, config=CONFIG, current=0, state=None) -> list[Decision]:
    """Decide once per (time, signals) tick, carrying the state along."""
    state = state or PolicyState()
    out = []
    for now, signals in ticks:
        decision = decide(signals, current, bounds, config, state, now)
        out.append(decision)
        state, current = decision.state, decision.desired
    return out


def test_backlog_over_the_maximum_is_capped_and_says_so():
    (decision,) = run((0.0, sig(4000, 200)), current=2)
    assert decision.desired == 8
    assert decision.reason == "backlog 4200 / 500 per worker → 9, capped at max 8"
    assert decision.state == PolicyState(desired=8, history=((0.0, 8),))


@pytest.mark.parametrize(
    ("ready", "unacked", "desired"), [(1, 0, 1), (500, 0, 1), (501, 0, 2), (700, 301, 3)]
)
def test_workers_are_the_backlog_over_the_backlog_per_worker_rounded_up(ready, unacked, desired):
    assert run((0.0, sig(ready, unacked)))[0].desired == desired


def test_no_backlog_is_raised_to_the_minimum():
    (decision,) = run((0.0, sig(0)), current=1)
    assert (decision.desired, decision.reason) == (
        1,
        "backlog 0 / 500 per worker → 0, raised to min 1",
    )


def test_with_min_zero_a_backlog_below_activation_recommends_zero():
    config = PolicyConfig(activation=10, stabilization_s=0)
    assert recommend(sig(9), ZERO_OK, config) == (0, "backlog 9 below activation 10 → 0")
    assert recommend(sig(4, 5), ZERO_OK, config)[0] == 0
    assert recommend(sig(10), ZERO_OK, config) == (1, "backlog 10 / 500 per worker → 1")


def test_from_zero_one_message_wakes_the_group_at_once():
    idle, woken = run((0.0, sig(0)), (5.0, sig(1)), bounds=ZERO_OK)
    assert idle.desired == 0
    assert idle.reason == "backlog 0 below activation 1 → 0"
    assert woken.desired == 1


def test_activation_matters_only_when_min_is_zero():
    assert recommend(sig(3), BOUNDS, PolicyConfig(activation=100))[0] == 1


def test_scale_to_zero_waits_the_stabilization_window():
    ticks = [(0.0, sig(1)), (30.0, sig(0)), (60.0, sig(0)), (60.5, sig(0))]
    assert [d.desired for d in run(*ticks, bounds=ZERO_OK)] == [1, 1, 1, 0]


def test_a_slow_drain_rate_asks_for_more_workers_than_the_backlog_rule():
    # 10 acks/s over 2 consumers: 5/s, 300 per worker within 60 s; 6000 / 300 = 20.
    signals = sig(6000, consumers=2, ack_rate=10.0)
    bounds = ScaleSpec(min=1, max=30, backlog_per_worker=500)
    assert recommend(signals, bounds, CONFIG) == (
        20,
        "backlog 6000 / 500 per worker → 12; at 5 acks/s per worker, draining it within 60s needs 20",
    )
    capped = recommend(signals, BOUNDS, CONFIG)
    assert capped[0] == 8
    assert capped[1].endswith("needs 20, capped at max 8")


def test_the_drain_horizon_sets_how_fast_the_backlog_must_go():
    signals = sig(6000, consumers=2, ack_rate=10.0)
    bounds = ScaleSpec(min=1, max=30, backlog_per_worker=500)
    assert (
        recommend(signals, bounds, PolicyConfig(drain_horizon_s=120))[0] == 12
    )  # 6000/600 = 10 < 12
    assert recommend(signals, bounds, PolicyConfig(drain_horizon_s=30))[0] == 30  # 40, capped


def test_a_fast_drain_rate_never_lowers_the_backlog_rule():
    assert recommend(sig(1000, ack_rate=1000.0), BOUNDS, CONFIG) == (
        2,
        "backlog 1000 / 500 per worker → 2",
    )


@pytest.mark.parametrize(
    ("consumers", "ack_rate"),
    [(0, 10.0), (2, 0.0), (2, math.nan), (2, math.inf), (2, -5.0)],
)
def test_the_drain_rule_is_skipped_without_a_usable_per_worker_rate(consumers, ack_rate):
    signals = sig(6000, consumers=consumers, ack_rate=ack_rate)
    assert recommend(signals, ScaleSpec(min=1, max=30, backlog_per_worker=500), CONFIG)[0] == 12


@pytest.mark.parametrize("ack_rate", [1e-300, 5e-324])
def test_a_vanishing_drain_rate_asks_for_the_maximum(ack_rate):
    workers, why = recommend(sig(10, consumers=1000, ack_rate=ack_rate), BOUNDS, CONFIG)
    assert workers == 8
    assert why.endswith("needs 1000000, capped at max 8")


def test_scale_up_is_immediate_and_scale_down_waits_the_window():
    ticks = [
        (0.0, sig(4000)),  # → 8
        (30.0, sig(1500)),  # → 3, but 8 is in the window
        (60.0, sig(0)),  # → 1; 8 (t=0) is still in the window, inclusive
        (61.0, sig(0)),  # 8 expired; 3 (t=30) remains
        (89.0, sig(2600)),  # → 6 at once
        (91.0, sig(0)),  # 6 (t=89) is in the window
        (150.0, sig(0)),  # everything expired
    ]
    decisions = run(*ticks)
    assert [d.desired for d in decisions] == [8, 8, 8, 3, 6, 6, 1]
    assert decisions[1].reason == (
        "backlog 1500 / 500 per worker → 3; keeping 8, the highest recommendation of the "
        "last 60s (scale-down stabilization)"
    )
    assert decisions[4].reason == "backlog 2600 / 500 per worker → 6"


def test_a_fresh_start_keeps_the_running_workers_for_a_window():
    decisions = run((0.0, sig(0)), (60.0, sig(0)), (61.0, sig(0)), current=5)
    assert [d.desired for d in decisions] == [5, 5, 1]


def test_a_zero_window_scales_down_at_once():
    config = PolicyConfig(stabilization_s=0)
    decisions = run((0.0, sig(4000)), (1.0, sig(0)), config=config)
    assert [d.desired for d in decisions] == [8, 1]


def test_the_history_keeps_only_recommendations_that_can_still_be_the_highest():
    ticks = [(float(t), sig(500 * (t % 8 + 1))) for t in range(1000)]
    decisions = run(*ticks, bounds=ScaleSpec(min=1, max=1000, backlog_per_worker=500))
    assert all(len(d.state.history) <= 8 for d in decisions)
    assert decisions[-2].state.history == ((991.0, 8), (998.0, 7))
    assert decisions[-1].state.history == ((999.0, 8),)


def test_unreadable_signals_hold_the_running_workers_before_any_decision():
    (decision,) = run((0.0, None), current=3)
    assert decision.desired == 3
    assert decision.reason == "signals unavailable: holding 3, the workers running"


def test_unreadable_signals_hold_the_last_decision_and_never_scale_to_zero():
    decisions = run((0.0, sig(3000)), (10.0, None), (500.0, None), bounds=ZERO_OK)
    assert [d.desired for d in decisions] == [6, 6, 6]
    assert decisions[2].reason == "signals unavailable: holding 6, the last decision"
    assert [d.reason.startswith("signals unavailable") for d in decisions] == [False, True, True]


def test_a_held_figure_outside_the_bounds_is_clamped():
    (decision,) = run((0.0, None), current=20)
    assert decision.desired == 8
    assert (
        decision.reason
        == "signals unavailable: holding 8, the workers running (20, clamped to [1, 8])"
    )


def test_after_an_outage_a_scale_down_waits_a_window_of_real_readings():
    ticks = [(0.0, sig(3000)), (100.0, None), (130.0, sig(0)), (160.0, sig(0)), (161.0, sig(0))]
    decisions = run(*ticks)
    assert [d.desired for d in decisions] == [6, 6, 6, 6, 1]
    assert not decisions[2].reason.startswith("signals unavailable")


def test_policy_config_reads_a_groups_scale_settings():
    spec = parse_topology(
        "groups: {a: {jobs: [a], scale: {min: 0, activation: 7, stabilization: 2m}}}"
    )
    config = PolicyConfig.for_scale(spec.groups["a"].scale)
    assert config == PolicyConfig(stabilization_s=120.0, activation=7, drain_horizon_s=60.0)

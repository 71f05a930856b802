"""The scaling policy: how many workers a group (or readers a stream source) should run, decided purely from its signals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from consumers.autoscaler.signals import QueueSignals
from topology.spec import ScaleSpec

# Above every ScaleSpec.max (1000), so a drain estimate that runs to infinity stays a number
# that the bounds then cap.
_UNBOUNDED = 1_000_000


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """How the policy settles, wakes from zero and judges the drain rate."""

    stabilization_s: float = 60.0  # scale down only to the highest recommendation of this window
    activation: int = 1  # with min 0: backlog (ready + unacked) needed to wake from zero
    drain_horizon_s: float = 60.0  # backlog the workers will not drain within this needs more

    @classmethod
    def for_scale(cls, scale: ScaleSpec) -> PolicyConfig:
        """Return the configuration that a group's (or stream source's) ``scale`` settings ask for."""
        return cls(stabilization_s=scale.stabilization / 1000, activation=scale.activation)


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy remembers between decisions; a state without history is a fresh start."""

    desired: int = 0
    # (time, recommendation) within the window, kept only while it can still be the highest.
    history: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """How many workers the group should run, why, and the state for the next decision."""

    desired: int
    reason: str
    state: PolicyState


def decide(
    signals: QueueSignals | None,
    current: int,
    bounds: ScaleSpec,
    config: PolicyConfig,
    state: PolicyState,
    now: float,
) -> Decision:
    """Return the workers a group should run given its signals (``None``: unreadable, so hold)."""
    if signals is None:
        return _hold(current, bounds, config, state, now)
    wanted, why = recommend(signals, bounds, config)
    # A fresh start counts the workers already running as a recommendation, so a restarted
    # autoscaler waits a full window before it takes workers away.
    seen = state.history or ((now, _clamp(current, bounds)),)
    history = _remember(seen, now, wanted, config.stabilization_s)
    desired = _clamp(max(r for _, r in history), bounds)
    if desired > wanted:
        why += (
            f"; keeping {desired}, the highest recommendation of the last "
            f"{config.stabilization_s:g}s (scale-down stabilization)"
        )
    return Decision(desired, why, PolicyState(desired, history))


def recommend(signals: QueueSignals, bounds: ScaleSpec, config: PolicyConfig) -> tuple[int, str]:
    """Return the workers ``signals`` call for within ``bounds``, before stabilization, and why."""
    backlog = signals.ready + signals.unacked
    if bounds.min == 0 and backlog < config.activation:
        return 0, f"backlog {backlog} below activation {config.activation} → 0"
    per = bounds.backlog_per_worker
    workers = -(-backlog // per)
    why = f"backlog {backlog} / {per} per worker → {workers}"
    rate, horizon = signals.ack_rate, config.drain_horizon_s
    # Only a backlog to drain, with a measured rate to judge it by, may call for more.
    if backlog > 0 and signals.consumers > 0 and math.isfinite(rate) and rate > 0:
        per_worker = rate / signals.consumers
        capacity = per_worker * horizon  # what one worker acks within the horizon
        needed = backlog / capacity if capacity > 0 else math.inf
        drain = _UNBOUNDED if needed >= _UNBOUNDED else math.ceil(needed)
        if drain > workers:
            workers = drain
            why += f"; at {per_worker:.3g} acks/s per worker, draining it within {horizon:g}s needs {workers}"
    clamped = _clamp(workers, bounds)
    if clamped > workers:
        why += f", raised to min {bounds.min}"
    elif clamped < workers:
        why += f", capped at max {bounds.max}"
    return clamped, why


def _hold(
    current: int, bounds: ScaleSpec, config: PolicyConfig, state: PolicyState, now: float
) -> Decision:
    """Keep the previous decision (or ``current`` before any) while the signals are missing."""
    previous, source = (
        (state.desired, "the last decision") if state.history else (current, "the workers running")
    )
    desired = _clamp(previous, bounds)
    why = f"signals unavailable: holding {desired}, {source}"
    if desired != previous:
        why += f" ({previous}, clamped to [{bounds.min}, {bounds.max}])"
    # The held figure counts as a recommendation, so a scale-down after an outage still
    # waits a full window of real readings.
    history = _remember(state.history, now, desired, config.stabilization_s)
    return Decision(desired, why, PolicyState(desired, history))


def _remember(
    history: tuple[tuple[float, int], ...], now: float, wanted: int, window: float
) -> tuple[tuple[float, int], ...]:
    """Return ``history`` within the window, plus ``wanted`` now, minus what it outranks."""
    # An older recommendation no higher than a newer one can never be the window's highest
    # again (it expires first), so dropping it keeps the history short without changing
    # any decision.
    kept = tuple((t, r) for t, r in history if now - window <= t <= now and r > wanted)
    return (*kept, (now, wanted))


def _clamp(workers: int, bounds: ScaleSpec) -> int:
    return max(bounds.min, min(bounds.max, workers))

"""The schedules as operators see them: each one's rule, next and last runs, and pausing or resuming it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobstore.model import JobStore, ScheduleState
from producers.tenancy import iso
from topology.compiled import CompiledTopology
from topology.errors import JobNotFoundError
from topology.limits import excerpt
from topology.schedules import ScheduleSpec


def schedule_view(name: str, spec: ScheduleSpec, state: ScheduleState | None) -> dict[str, Any]:
    """Return a schedule as every door shows it: its rule, its job, whether paused, its next and last runs."""
    # The next run is in the past while no scheduler fires it, and none while paused.
    paused = state is not None and state.paused_at is not None
    after = state.fires_after() if state is not None else None
    return {
        "name": name,
        "job": spec.job,
        "rule": spec.rule(),
        "cron": spec.cron,
        "every_s": None if spec.every is None else spec.every / 1000,
        "timezone": spec.timezone,
        "misfire": spec.misfire.value,
        "priority": spec.priority.value,
        "tenant": spec.tenant,
        "paused": paused,
        "paused_at": iso(state.paused_at) if state is not None else None,
        "next_run": None if paused or after is None else iso(spec.next_after(after)),
        "last_run": iso(state.last_due) if state is not None else None,
        "last_job_id": state.last_job_id if state is not None else None,
    }


async def schedule_views(
    topology: CompiledTopology, store: JobStore, now: datetime, *, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Return the view of each schedule the topology declares (of ``tenant`` only, when given), by name."""
    chosen = _declared(topology, tenant)
    states = await store.schedule_states(list(chosen), now)
    return [schedule_view(name, spec, states.get(name)) for name, spec in chosen.items()]


async def set_paused(
    topology: CompiledTopology,
    store: JobStore,
    name: str,
    now: datetime,
    *,
    paused: bool,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Pause or resume the schedule ``name`` and return its view (resuming skips what fell due meanwhile)."""
    spec = topology.schedule(name)
    if spec is None or (tenant is not None and spec.tenant != tenant):
        known = ", ".join(_declared(topology, tenant)) or "none"
        raise JobNotFoundError(f"no schedule named {excerpt(name)}; schedules: {known}")
    change = store.pause_schedule if paused else store.resume_schedule
    return schedule_view(name, spec, await change(name, now))


def _declared(topology: CompiledTopology, tenant: str | None) -> dict[str, ScheduleSpec]:
    """Return the topology's schedules (of ``tenant`` only, when given) by name, in its order."""
    return {n: s for n, s in topology.schedules if tenant is None or s.tenant == tenant}

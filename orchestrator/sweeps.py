"""The due-time sweep (run by beat): every saga whose next step is due gets it enqueued once.

A row is claimed by moving its due time forward by the step lease (compare-and-set on the old due
time), so two beats or two sweeps never enqueue the same row twice; a step that dies or a message
that is lost leaves the lease to expire, and the next sweep re-drives it.
"""

from __future__ import annotations

import datetime as dt

from orchestrator.core.saga import State, next_step
from orchestrator.logs import get_logger
from orchestrator.steps import Deps

log = get_logger("orchestrator.sweeps")


def sweep_due(d: Deps, now: dt.datetime | None = None) -> int:
    now = now or d.clock()
    lease = now + dt.timedelta(seconds=d.settings.step_lease_seconds)
    enqueued = 0
    for checkout_id, state, due in d.repo.due(now, d.settings.sweep_batch):
        step = next_step(State(state))
        if step is None:
            d.repo.claim(checkout_id, due, None)
            continue
        if d.repo.claim(checkout_id, due, lease):
            d.enqueue(step, checkout_id)
            enqueued += 1
    if enqueued:
        log.info("sweep.due.enqueued", count=enqueued)
    return enqueued

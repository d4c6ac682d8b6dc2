"""The due-time sweep (run by beat): every saga whose next step is due gets it enqueued once.

Rows are claimed by moving their due time forward by the step lease in the claiming transaction
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so two beats or two
sweeps never enqueue the same row twice; a step that dies or a message that is lost leaves the
lease to expire, and the next sweep re-drives it. The same sweep captures delivered holds,
expires undelivered ones at their capture deadline and tracks refunds: each is a due time.
"""

from __future__ import annotations

import datetime as dt

from orchestrator.domain.saga import State, Step, next_step
from orchestrator.telemetry.logs import get_logger
from orchestrator.saga.deps import Deps
from orchestrator.store.idempotency import IdempotencyStore

log = get_logger("orchestrator.saga.sweeps")


def sweep_due(d: Deps, now: dt.datetime | None = None) -> int:
    """Enqueue the step of every saga (and refund) that is due: re-drives, polls, deadlines,
    captures, hold expiries. Returns how many were enqueued."""
    now = now or d.clock()
    lease = now + dt.timedelta(seconds=d.settings.step_lease_seconds)
    enqueued = 0
    for checkout_id, state in d.repo.claim_due(now, lease, d.settings.sweep_batch):
        step = next_step(State(state))
        if step is not None:
            d.enqueue(step, checkout_id)
            enqueued += 1
    for refund_id in d.repo.claim_due_refunds(now, lease, d.settings.sweep_batch):
        d.enqueue(Step.REFUND, refund_id)
        enqueued += 1
    if enqueued:
        log.info("sweep.due.enqueued", count=enqueued)
    IdempotencyStore(d.repo).prune()
    return enqueued

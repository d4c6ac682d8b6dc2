"""Plural's webhook deliveries' SQL: the group-commit insert (a known ``webhook-id`` skipped), the
processor's batch claim, the fenced finish, and the sweep's release of kept events and lapsed claims.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from sqlalchemy import and_, bindparam, or_, update
from sqlmodel import col, select

from orchestrator.store.models import Checkout, Refund, WebhookEvent
from orchestrator.store.repo import Repo
from orchestrator.store.statements import insert_skipping

#: the columns a delivery is stored with
STORED = ("webhook_id", "event_type", "order_id", "merchant_order_reference", "order_status", "body", "status",
          "attempts", "received_at", "note")


def add(repo: Repo, rows: list[WebhookEvent]) -> dict[str, int]:
    """Insert deliveries in one transaction, skipping a known ``webhook_id``; the new ones'
    ids by ``webhook_id``."""
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    values = [{c: getattr(r, c) for c in STORED} for r in rows]
    statement = insert_skipping(repo.engine, table, ["webhook_id"]).returning(table.c.id, table.c.webhook_id)
    with repo.session() as s:
        stored = {webhook_id: event_id for event_id, webhook_id in s.connection().execute(statement, values)}
        s.commit()
    return stored


def claim_batch(repo: Repo, token: str, now: dt.datetime, limit: int, statuses: tuple[str, ...],
                lease_seconds: float, defer_for: dt.timedelta) -> list[WebhookEvent]:
    """Claim up to ``limit`` events in ``statuses`` (a deferred one only while younger than
    ``defer_for``) under ``token``, oldest first; the claimed events."""
    with repo.read_session() as s:  # nothing to claim (the processor's last look, mostly): no write
        if s.exec(select(WebhookEvent.id).where(col(WebhookEvent.status).in_(statuses)).limit(1)).first() is None:
            return []
    with repo.session() as s:
        ids = select(WebhookEvent.id).where(col(WebhookEvent.status).in_(statuses))
        if "deferred" in statuses:
            ids = ids.where(col(WebhookEvent.received_at) > now - defer_for)
        ids = ids.order_by(col(WebhookEvent.id)).limit(limit)
        s.connection().execute(update(WebhookEvent).where(col(WebhookEvent.id).in_(ids.scalar_subquery()),
                                                          col(WebhookEvent.status).in_(statuses))
                               .values(status="processing", claim=token, claimed_at=now,
                                       claim_until=now + dt.timedelta(seconds=lease_seconds),
                                       attempts=WebhookEvent.attempts + 1).execution_options(synchronize_session=False))
        claimed = list(s.exec(select(WebhookEvent).where(WebhookEvent.claim == token).order_by(col(WebhookEvent.id))))
        s.commit()  # read in the claim's transaction: none begun after it, to roll back at close
        return claimed


def finish(repo: Repo, now: dt.datetime, outcomes: list[tuple[WebhookEvent, str, str]]) -> None:
    """Record (event, status, note) outcomes in one transaction, each only while its claim holds."""
    table = WebhookEvent.__table__  # type: ignore[attr-defined]
    with repo.session() as s:  # only while the batch's claim holds: a rival's outcomes stand
        s.connection().execute(
            update(table).where(table.c.id == bindparam("event_id"), table.c.claim == bindparam("b_claim")).values(
                status=bindparam("new_status"), note=bindparam("new_note"), processed_at=now, claim=None,
                claim_until=None),
            [{"event_id": e.id, "b_claim": e.claim, "new_status": status, "new_note": note[:500]}
             for e, status, note in outcomes])
        s.commit()


def release(repo: Repo, clock: Callable[[], dt.datetime], batch: int, defer_for: dt.timedelta,
            stale_claim: dt.timedelta) -> tuple[list[Any], bool]:
    """In one transaction: make pending again the kept (deferred) events whose checkout or refund is
    known now, and lapsed claims; returns the released kept events' ids and whether a pending
    event older than 10 seconds is waiting."""
    with repo.session() as s:
        mine = or_(col(Checkout.plural_order_id) == col(WebhookEvent.order_id),
                   and_(col(Checkout.merchant_order_reference) == col(WebhookEvent.merchant_order_reference),
                        col(Checkout.plural_order_id).is_not(None)))
        ready = list(s.exec(select(WebhookEvent.id).join(Checkout, mine).where(
            WebhookEvent.status == "deferred", col(WebhookEvent.received_at) > clock() - defer_for
        ).limit(batch)).all())
        refund_known = or_(col(Refund.plural_refund_order_id) == col(WebhookEvent.order_id),
                           col(Refund.merchant_refund_reference) == col(WebhookEvent.merchant_order_reference))
        ready += list(s.exec(select(WebhookEvent.id).join(Refund, refund_known).where(
            WebhookEvent.status == "deferred", col(WebhookEvent.received_at) > clock() - defer_for
        ).limit(batch)).all())
        # claims whose processor died (it stopped renewing); a claim from before claims had an end
        # lapses ``stale_claim`` after it was taken
        now = clock()
        lapsed = or_(col(WebhookEvent.claim_until) < now,
                     and_(col(WebhookEvent.claim_until).is_(None), col(WebhookEvent.claimed_at) < now - stale_claim))
        s.connection().execute(update(WebhookEvent).where(col(WebhookEvent.status) == "processing", lapsed)
                               .values(status="pending"))
        if ready:
            s.connection().execute(update(WebhookEvent).where(col(WebhookEvent.id).in_(list(ready)))
                                   .values(status="pending"))
        # pending events nobody is processing (a lost kick): worth a processor too
        waiting = s.exec(select(WebhookEvent.id).where(
            WebhookEvent.status == "pending", col(WebhookEvent.received_at) < clock() - dt.timedelta(seconds=10)
        ).limit(1)).first()
        s.commit()
    return ready, waiting is not None

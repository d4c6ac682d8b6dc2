"""Merchant events' SQL: the outbox's insert, and delivery's look, claim and fenced writes.

A claim is a compare-and-set: the event is still pending, due, free (unclaimed, or claimed more
than ``lease`` seconds ago) and the oldest pending event of its checkout. Every later write of an
attempt is fenced on the claim token it took.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, exists, insert, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from orchestrator.store.models import MerchantEvent, MerchantEventAttempt
from orchestrator.store.repo import Repo
from orchestrator.store.statements import ADD_EVENT


def add_in(s: Session, row: dict[str, Any]) -> None:
    """Add an event row in the caller's session (its transaction)."""
    s.connection().execute(ADD_EVENT, row)


def _free(now: dt.datetime, lease: float) -> Any:
    return or_(col(MerchantEvent.claim).is_(None), col(MerchantEvent.claimed_at) < now - dt.timedelta(seconds=lease))


def _unblocked() -> Any:
    """No earlier event of the same checkout is pending: events of a checkout go in order."""
    earlier = aliased(MerchantEvent)
    return ~exists().where(and_(col(earlier.subject_id) == col(MerchantEvent.subject_id),
                                col(earlier.id) < col(MerchantEvent.id), col(earlier.status) == "pending"))


def due(repo: Repo, now: dt.datetime, limit: int, lease: float) -> list[int]:
    """Up to ``limit`` due events' ids (a look, no claim)."""
    query = (select(MerchantEvent.id).where(col(MerchantEvent.status) == "pending",
                                            col(MerchantEvent.next_attempt_at) <= now, _free(now, lease), _unblocked())
             .order_by(col(MerchantEvent.id)).limit(limit))
    with repo.read_session() as s:  # nothing due (mostly): no write
        return list(s.exec(query))


def any_due(repo: Repo, now: dt.datetime) -> bool:
    with repo.read_session() as s:
        return s.exec(select(MerchantEvent.id).where(col(MerchantEvent.status) == "pending",
                                                     col(MerchantEvent.next_attempt_at) <= now).limit(1)).first() is not None


def claim(repo: Repo, event_id: int, token: str, now: dt.datetime, lease: float) -> MerchantEvent | None:
    """Claim one due event under ``token``; the event, or None if another sender has it."""
    with repo.session() as s:
        took = s.connection().execute(
            update(MerchantEvent).where(col(MerchantEvent.id) == event_id, col(MerchantEvent.status) == "pending",
                                        col(MerchantEvent.next_attempt_at) <= now, _free(now, lease), _unblocked())
            .values(claim=token, claimed_at=now))
        s.commit()
        if took.rowcount != 1:
            return None
    with repo.read_session() as s:
        return s.exec(select(MerchantEvent).where(MerchantEvent.id == event_id, MerchantEvent.claim == token)).first()


def record(repo: Repo, event: MerchantEvent, values: dict[str, Any], attempt: dict[str, Any]) -> bool:
    """In one transaction, fenced on ``event.claim``: write ``values`` on the event and add its
    ``attempt`` row. False (nothing written) if the claim was taken over."""
    with repo.session() as s:
        moved = s.connection().execute(update(MerchantEvent).where(col(MerchantEvent.id) == event.id,
                                                                   col(MerchantEvent.claim) == event.claim)
                                       .values(**values))
        if moved.rowcount != 1:
            s.rollback()
            return False
        s.connection().execute(insert(MerchantEventAttempt.__table__).values(  # type: ignore[attr-defined]
            event_id=event.id, **attempt))
        s.commit()
    return True


def mark_sent(repo: Repo, event: MerchantEvent, at: dt.datetime) -> bool:
    """The event's task was sent (fenced on its claim); False if the claim was taken over."""
    with repo.session() as s:
        sent = s.connection().execute(update(MerchantEvent).where(col(MerchantEvent.id) == event.id,
                                                                  col(MerchantEvent.claim) == event.claim)
                                      .values(task_sent_at=at))
        s.commit()
    return bool(sent.rowcount == 1)


def redeliver(repo: Repo, event_id: str, now: dt.datetime) -> MerchantEvent | None:
    """Make the event pending again, due now, unclaimed; the event, or None if there is none."""
    with repo.session() as s:
        result = s.connection().execute(update(MerchantEvent).where(col(MerchantEvent.event_id) == event_id)
                                        .values(status="pending", next_attempt_at=now, claim=None))
        s.commit()
        if result.rowcount != 1:
            return None
    with repo.read_session() as s:
        return s.exec(select(MerchantEvent).where(MerchantEvent.event_id == event_id)).first()

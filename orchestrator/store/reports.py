"""What an operator asks: where do checkouts stand, what is stuck and why, what happened to one.

Plain reads returning plain data; ``orchestrator status`` and ``orchestrator checkout`` print them
(``orchestrator/entrypoints/cli.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import func
from sqlmodel import col, or_, select

from orchestrator.domain import saga
from orchestrator.domain.saga import RefundState, State
from orchestrator.store.models import (Checkout, aware, MerchantEvent, MerchantEventAttempt, Refund, StepAttempt, Transition,
                                    WebhookEvent)
from orchestrator.store.repo import Repo

#: a due time this far in the past means nobody is driving the checkout (the sweep runs every few seconds)
OVERDUE_AFTER = dt.timedelta(seconds=60)
FINALS = [s.value for s in saga.FINAL]


def credentials(rejected_since: float | None, now: dt.datetime) -> dict[str, Any]:
    """Plural's view of our client credentials: refused since when (epoch seconds, the token
    store's shared flag), or accepted."""
    if rejected_since is None:
        return {"rejected": False, "since": None, "seconds": None}
    since = dt.datetime.fromtimestamp(rejected_since, tz=dt.timezone.utc)
    return {"rejected": True, "since": since, "seconds": max(round((now - since).total_seconds()), 0)}


def overview(repo: Repo, now: dt.datetime, limit: int = 20, rejected_since: float | None = None) -> dict[str, Any]:
    """Where checkouts stand; ``rejected_since``: the token store's "credentials rejected" flag."""
    with repo.read_session() as s:
        counted = s.exec(select(Checkout.state, Checkout.payment_method, func.count())
                         .group_by(Checkout.state, Checkout.payment_method)).all()
        late = (col(Checkout.next_due_at) < now - OVERDUE_AFTER) & col(Checkout.state).not_in(FINALS)
        overdue_count = s.exec(select(func.count()).select_from(Checkout).where(late)).one()
        overdue = s.exec(select(Checkout.id, Checkout.state, Checkout.next_due_at).where(late)
                         .order_by(col(Checkout.next_due_at)).limit(limit)).all()
        attention = s.exec(select(Checkout.id, Checkout.attention_from, Checkout.attention_reason, Checkout.updated_at)
                           .where(Checkout.state == State.NEEDS_ATTENTION.value)
                           .order_by(col(Checkout.updated_at)).limit(limit)).all()
        # a refund stopped for an operator is listed with its checkout (whatever the checkout's state)
        attention_refunds = s.exec(select(Refund.checkout_id, Refund.id, Refund.error_message, Refund.updated_at)
                                   .where(Refund.state == RefundState.NEEDS_ATTENTION.value)
                                   .order_by(col(Refund.updated_at)).limit(limit)).all()
        since = now - dt.timedelta(hours=24)
        failures = s.exec(select(Checkout.error_code, func.count()).where(
            Checkout.state == State.FAILED.value, col(Checkout.updated_at) >= since).group_by(Checkout.error_code)
            .order_by(func.count().desc())).all()
        events = dict(s.exec(select(MerchantEvent.status, func.count()).group_by(MerchantEvent.status)).all())
        oldest_event = s.exec(select(func.min(MerchantEvent.created_at)).where(MerchantEvent.status == "pending")).one()
        webhooks = dict(s.exec(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status)).all())
    by_status_and_method: dict[tuple[str, str], int] = {}
    by_status: dict[str, int] = {}
    by_method: dict[str, int] = {}
    for state, method, count in counted:
        public = saga.public_status(State(state))
        by_status_and_method[(public, method)] = by_status_and_method.get((public, method), 0) + count
        by_status[public] = by_status.get(public, 0) + count
        by_method[method] = by_method.get(method, 0) + count
    oldest = aware(oldest_event)
    return {
        "checkouts": sum(by_status.values()),
        "by_status": dict(sorted(by_status.items(), key=lambda kv: -kv[1])),
        "by_method": by_method,
        "by_status_and_method": by_status_and_method,
        "overdue": {"count": overdue_count, "oldest": [
            {"id": i, "state": st, "late_seconds": round((now - aware(due)).total_seconds())}  # type: ignore[operator]
            for i, st, due in overdue]},
        "needs_attention": [{"id": i, "stuck_in": f, "reason": r, "since": aware(u)} for i, f, r, u in attention]
        + [{"id": i, "stuck_in": f"refund {rid}", "reason": r, "since": aware(u)} for i, rid, r, u in attention_refunds],
        "failures_24h": [{"code": code or "-", "count": n} for code, n in failures],
        "events": {"pending": events.get("pending", 0), "delivered": events.get("delivered", 0),
                   "failed": events.get("failed", 0),
                   "oldest_pending_seconds": round((now - oldest).total_seconds()) if oldest else None},
        "webhooks": webhooks,
        "credentials": credentials(rejected_since, now),
    }


def checkout_detail(repo: Repo, checkout_id: str) -> dict[str, Any] | None:
    """One checkout: its row, history, gateway calls, events (with their attempts) and refunds."""
    with repo.read_session() as s:
        row = s.get(Checkout, checkout_id)
        if row is None:
            return None
        history = list(s.exec(select(Transition).where(Transition.checkout_id == checkout_id)
                              .order_by(col(Transition.id))))
        attempts = list(s.exec(select(StepAttempt).where(StepAttempt.checkout_id == checkout_id)
                               .order_by(col(StepAttempt.id))))
        events = list(s.exec(select(MerchantEvent).where(MerchantEvent.subject_id == checkout_id)
                             .order_by(col(MerchantEvent.id))))
        deliveries = {e.id: list(s.exec(select(MerchantEventAttempt).where(MerchantEventAttempt.event_id == e.id)
                                         .order_by(col(MerchantEventAttempt.id)))) for e in events}
        refunds = list(s.exec(select(Refund).where(Refund.checkout_id == checkout_id)
                              .order_by(col(Refund.created_at))))
        webhooks = list(s.exec(select(WebhookEvent).where(WebhookEvent.order_id == row.plural_order_id)
                               .order_by(col(WebhookEvent.id)))) if row.plural_order_id else []
    return {"checkout": row, "history": history, "attempts": attempts, "events": events, "deliveries": deliveries,
            "refunds": refunds, "webhooks": webhooks,
            "status": saga.public_status(State(row.state)),
            "event_types": [e.type for e in events],
            "last_event": json.loads(events[-1].payload) if events else None}


def events_after(repo: Repo, start: int, kind: str | None, limit: int, now: dt.datetime) -> list[MerchantEvent]:
    """Merchant events numbered above ``start`` (of type ``kind``), oldest first. On PostgreSQL the
    last two seconds are held back: an event committed after a later-numbered one is never skipped."""
    q = select(MerchantEvent).where(col(MerchantEvent.id) > start)
    if kind is not None:
        q = q.where(MerchantEvent.type == kind)
    if repo.engine.dialect.name == "postgresql":
        q = q.where(col(MerchantEvent.created_at) < now - dt.timedelta(seconds=2))
    with repo.read_session() as s:
        return list(s.exec(q.order_by(col(MerchantEvent.id)).limit(limit)))


def list_checkouts(repo: Repo, states: list[str] | None, created_after: dt.datetime | None,
                   before: tuple[dt.datetime, str] | None, limit: int) -> list[Checkout]:
    """Checkouts newest first, in ``states``, created after a time, and after ``before``
    (the (created_at, id) of the last row of the previous page)."""
    q = select(Checkout)
    if states is not None:
        q = q.where(col(Checkout.state).in_(states))
    if created_after is not None:
        q = q.where(col(Checkout.created_at) > created_after)
    if before is not None:
        at, last_id = before
        q = q.where(or_(col(Checkout.created_at) < at,
                        (col(Checkout.created_at) == at) & (col(Checkout.id) < last_id)))
    with repo.read_session() as s:
        return list(s.exec(q.order_by(col(Checkout.created_at).desc(), col(Checkout.id).desc()).limit(limit)))

"""The outbox: events for the merchant's backend, written in the transaction of the change they
report, so an event exists exactly when its change was committed (none for a change rolled back,
none lost after one committed). Delivery is ``orchestrator.outbound.delivery``'s job.

An event: ``evt_…`` id, type, creation time, and the checkout (or refund) exactly as the API's
``GET`` showed it in that transaction. Types: ``checkout.<status>`` for every change of a
checkout's public status (``checkout.awaiting_otp``, ``checkout.authorized``,
``checkout.completed``, ``checkout.failed``, ``checkout.cancelled``, ``checkout.expired``,
``checkout.needs_attention``…), ``refund.processed``, ``refund.failed`` and
``refund.needs_attention`` (stopped for an operator: its ``error`` says why).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Callable

from sqlmodel import Session

from orchestrator.domain import saga
from orchestrator.domain.ids import new_id
from orchestrator.domain.saga import State
from orchestrator.store import events
from orchestrator.store.models import Checkout, MerchantEvent, Refund
from orchestrator.store.repo import Trail
from orchestrator.outbound.views import checkout_view, iso, refund_view

CHECKOUT_EVENT_TYPES = frozenset(f"checkout.{status.lower()}" for status in saga.PUBLIC_STATUS.values())
REFUND_EVENT_TYPES = frozenset({"refund.processed", "refund.failed", "refund.needs_attention"})
EVENT_TYPES = CHECKOUT_EVENT_TYPES | REFUND_EVENT_TYPES


def checkout_event_type(status: str) -> str:
    return f"checkout.{status.lower()}"


def checkout_change(before: Checkout, after: Checkout, trail: Callable[[], Trail],
                    now: dt.datetime) -> dict[str, Any] | None:
    """A move's event, if it changed the public status: the row to add in the move's transaction
    (its payload is the merchant's view of the checkout as written, with ``trail``: its history,
    the move's row included, and its refunds); else None."""
    status = saga.public_change(State(before.state), State(after.state))
    if status is None:
        return None
    history, refunds = trail()
    return _row(checkout_event_type(status), after.id, None, checkout_view(after, history, refunds, now), now)


def record_refund_change(s: Session, refund: Refund, now: dt.datetime) -> str | None:
    """In the refund's transaction: an event if it became PROCESSED, FAILED or NEEDS_ATTENTION."""
    kind = {"PROCESSED": "refund.processed", "FAILED": "refund.failed",
            "NEEDS_ATTENTION": "refund.needs_attention"}.get(refund.state)
    if kind is not None:
        events.add_in(s, _row(kind, refund.checkout_id, refund.id, refund_view(refund), now))
    return kind


def _row(kind: str, subject_id: str, refund_id: str | None, data: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {"event_id": new_id("evt_"), "type": kind, "subject_id": subject_id, "refund_id": refund_id,
            "payload": json.dumps(data, separators=(",", ":")), "created_at": now, "status": "pending",
            "attempts": 0, "next_attempt_at": now}


def envelope(event: MerchantEvent) -> dict[str, Any]:
    """An event as the merchant receives it (pushed, pulled, or as a task's argument)."""
    return {"id": event.event_id, "type": event.type, "created_at": iso(event.created_at),
            "data": json.loads(event.payload)}

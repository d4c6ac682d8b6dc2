"""What the merchant and the operator ask of refunds: a refund of a checkout (recorded, then run by the
saga's refund step), the refunds of a checkout, and an operator's resolve of a stuck refund.

Never above what was captured minus what was refunded (failed refunds excepted): the check and
the insert run in one transaction that holds the checkout's row (``BEGIN IMMEDIATE`` on SQLite,
``FOR UPDATE`` on PostgreSQL), so two concurrent requests cannot both spend the same paise.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from orchestrator.domain.saga import (LATE_REFUND_FAILED, RefundState, Step, automatic_refund_reference, refund_reserves,
                                      refund_state_of, refundable)
from orchestrator.plural import errors
from orchestrator.plural.models import Order
from orchestrator.saga.deps import TRANSIENT, Deps, text
from orchestrator.saga.steps.refund import disagreement, get_refund, move, sent_as
from orchestrator.store import refunds as refunds_store
from orchestrator.store.models import Refund
from orchestrator.merchant.errors import MerchantError
from orchestrator.store.repo import may_have_refunds
from orchestrator.telemetry.logs import get_logger

log = get_logger("orchestrator.merchant.refunds")


class RefundRefused(MerchantError):
    """A refused refund request or operator resolve of a refund."""


def request_refund(d: Deps, checkout_id: str, amount: int | None, reference: str | None) -> tuple[Refund, bool]:
    """Record a refund (or return the one with this reference) and enqueue it after the commit."""
    now = d.clock()
    with d.repo.session() as s:
        c = refunds_store.locked_checkout(s, checkout_id)
        if c is None:
            raise RefundRefused(404, "CHECKOUT_NOT_FOUND", f"no checkout {checkout_id}")
        if reference:
            existing = refunds_store.by_reference(s, reference)
            if existing is not None:
                if existing.checkout_id != c.id or (amount is not None and amount != existing.amount_value):
                    raise RefundRefused(409, "REFERENCE_CONFLICT", "merchant_refund_reference names another refund",
                                        refund_id=existing.id)
                return existing, False
        # a COMPLETED checkout, or one cancelled whose late payment was refunded automatically
        # (what that refund did not give back, if it failed, may be refunded again)
        if not may_have_refunds(c):
            raise RefundRefused(409, "INVALID_STATE",
                                "only a COMPLETED checkout (or one whose late payment was refunded) can be refunded",
                                status=c.state)
        mine = refunds_store.all_of(s, c.id)
        spent = sum(r.amount_value for r in mine if refund_reserves(RefundState(r.state), r.error_code))
        available = refundable(c.captured_amount, spent)
        value = available if amount is None else amount
        if value <= 0 or value > available:
            raise RefundRefused(422, "REFUND_EXCEEDS_CAPTURED",
                                f"at most {available} {c.currency} (minor units) can still be refunded",
                                refundable={"value": available, "currency": c.currency})
        row = Refund(checkout_id=c.id, merchant_refund_reference=reference or automatic_refund_reference(c.id, len(mine) + 1),
                     amount_value=value, currency=c.currency,
                     next_due_at=now + dt.timedelta(seconds=d.settings.step_lease_seconds),
                     created_at=now, updated_at=now)
        if not refunds_store.add(s, row):
            raise RefundRefused(409, "REFERENCE_CONFLICT", "merchant_refund_reference is already used")
    log.info("refund.requested", saga_id=checkout_id, refund_id=row.id, amount=value)
    for old in mine:  # a failed late refund that waited for this one is closed by it
        if old.state == RefundState.NEEDS_ATTENTION.value and old.error_code == LATE_REFUND_FAILED:
            move(d, old, RefundState.FAILED, error_code=LATE_REFUND_FAILED,
                 error_message=text(f"{old.error_message or ''} (refunded again as {row.id})"))
    d.engine.send(Step.REFUND, row.id)
    return row, True


def refunds_of(d: Deps, checkout_id: str) -> list[Refund]:
    return refunds_store.of_checkout(d.repo, checkout_id)


def resolve_refund(d: Deps, refund_id: str, who: str) -> Refund:
    """An operator's resolve of a refund that NEEDS_ATTENTION, decided by Plural, never by a wish:
    Plural's refund order, found by the refund's recorded order id or a reference it was sent with
    and checked as every look-up is, settles it (PROCESSED, or FAILED, its amount then free); no
    order under any of its references fails it. An order that disagrees, a refund still pending at
    Plural, or Plural unreachable: refused, nothing changed."""
    r = get_refund(d, refund_id)
    if r is None:
        raise RefundRefused(404, "NOT_FOUND", f"no refund {refund_id}")
    if r.state != RefundState.NEEDS_ATTENTION.value:
        raise RefundRefused(409, "INVALID_STATE", f"only a NEEDS_ATTENTION refund can be resolved; it is {r.state}")
    try:
        orders = _plural_orders_of(d, r)
    except TRANSIENT as exc:
        raise RefundRefused(503, "PLURAL_UNAVAILABLE", f"cannot ask Plural ({type(exc).__name__}); nothing was "
                            "changed, try again when Plural answers") from None
    disagreements = [why for why in (disagreement(d, r, o) for o in orders) if why]
    ours = [o for o in orders if disagreement(d, r, o) is None]
    by = f"resolved by {who}"
    if ours:
        order = ours[0]
        target = refund_state_of(order.status)
        if target is RefundState.PENDING:
            raise RefundRefused(409, "RESOLVE_REFUSED", f"refund order {order.order_id} is still {order.status} at "
                                "Plural; nothing was changed, resolve it once Plural settles it")
        fields: dict[str, Any] = {"plural_refund_order_id": order.order_id, "plural_status": order.status,
                                  "next_due_at": None}
        if target is RefundState.PROCESSED:
            fields.update(error_code=None, error_message=text(f"{by}: Plural processed {order.order_id}"))
        else:
            fields.update(error_code="REFUND_FAILED", error_message=text(f"{by}: Plural failed {order.order_id}"))
    elif disagreements:
        raise RefundRefused(409, "RESOLVE_REFUSED", text(f"Plural's order under this refund's reference is not this "
                                                         f"refund ({'; '.join(disagreements)}); reconcile it at "
                                                         "Plural, nothing was changed"))
    elif r.plural_refund_order_id:
        raise RefundRefused(409, "RESOLVE_REFUSED", f"Plural does not know the refund order "
                            f"{r.plural_refund_order_id} this refund recorded; nothing was changed")
    else:
        target = RefundState.FAILED
        fields = {"next_due_at": None, "error_code": "REFUND_NOT_AT_PLURAL",
                  "error_message": text(f"{by}: Plural has no refund under {', '.join(sent_as(r))}")}
    if not move(d, r, target, **fields):
        raise RefundRefused(409, "INVALID_STATE", "the refund moved on meanwhile")
    log.warning("refund.resolved", refund_id=r.id, saga_id=r.checkout_id, state=target.value, operator=who)
    resolved = get_refund(d, r.id)
    assert resolved is not None
    return resolved


def _plural_orders_of(d: Deps, r: Refund) -> list[Order]:
    """Plural's orders that may be this refund: its recorded order, else any under its references."""
    if r.plural_refund_order_id:
        try:
            return [d.plural.get_order(r.plural_refund_order_id)]
        except errors.NotFound:
            return []
    found = []
    for reference in sent_as(r):
        try:
            found.append(d.plural.get_order_by_reference(reference))
        except errors.NotFound:
            continue
    return found

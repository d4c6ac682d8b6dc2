"""Cancel at Plural (or find out no money can move any more), and the hold released before it lapses."""

from __future__ import annotations

from typing import Any

from orchestrator.domain.saga import Fact, Source, State, Step
from orchestrator.saga.answers import Mismatch, find_order_id, mismatch, order_fact, our_payment, settle
from orchestrator.saga.calls import call_ahead, resolve
from orchestrator.saga.deps import TRANSIENT, Deps, retry_later, state_fact
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout


def cancel_order(d: Deps, run: Run, c: Checkout) -> None:
    """Cancel at Plural, or find out that no money can move any more. Plural cancels only an
    AUTHORIZED order; a refusal is resolved from Get Order, never retried blindly."""
    try:
        order_id = find_order_id(d, run, c)
    except TRANSIENT as exc:
        return retry_later(d, run, c, Step.CANCEL_ORDER, exc)
    if order_id is None:
        state_fact(d, run, Fact.NOTHING_TO_CANCEL, "cancelled before any order reached Plural")
        return
    try:
        order = d.plural.get_order(order_id)
    except TRANSIENT as exc:
        return retry_later(d, run, c, Step.CANCEL_ORDER, exc)
    problem = mismatch(d, c, order)
    if problem is not None:
        raise Mismatch(problem)
    fact, _fields = order_fact(d, c, order)
    # an earlier cancel whose answer was lost took effect exactly when Plural now says CANCELLED
    resolve(d, run, Step.CANCEL_ORDER, "succeeded" if fact is Fact.PLURAL_CANCELLED else "failed",
             f"order {order.status}")
    if fact in (Fact.PLURAL_CANCELLED, Fact.PLURAL_PROCESSED, Fact.PLURAL_FAILED, Fact.PLURAL_PAYMENT_FAILED):
        settle(d, c, order, "before cancelling", Source.POLL, run)
        return
    if fact is None and our_payment(c, order) is None:
        # no payment of ours exists, and a cancelling checkout never makes one (this run holds the
        # checkout, so no payment step runs beside it): no money can move. Plural would refuse
        # to cancel an order with no payment anyway.
        d.vault.drop_card(c.id)
        state_fact(d, run, Fact.NOTHING_TO_CANCEL, "no payment at Plural and none will be made",
                   plural_status=order.status)
        return
    # a refusal is checked against Get Order below, repeated or not
    got = call_ahead(d, run, Step.CANCEL_ORDER, order_id, lambda: d.plural.cancel_order(order_id), lambda o: o.status,
                     idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CANCEL_ORDER, got.transient)
    if got.refused:
        try:
            truth = d.plural.get_order(order_id)
        except TRANSIENT as again:
            return retry_later(d, run, c, Step.CANCEL_ORDER, again)
        if settle(d, c, truth, f"cancel refused ({got.refused.code})", Source.POLL, run):
            return
        # the payment is still open at Plural: cancelled for the merchant, watched until Plural is final
        state_fact(d, run, Fact.CANCEL_REFUSED, f"cancel refused ({got.refused.code}); watching the open payment",
                   plural_status=truth.status)
        return
    cancelled = got.result
    # an authorization that arrived after the customer's deadline is released, and says so
    late = fact is Fact.PLURAL_AUTHORIZED and c.cancel_reason == "CUSTOMER_TIMEOUT"
    if c.cancel_reason == "HOLD_EXPIRED":
        reason = "hold released before it lapsed: no delivery by the capture deadline"
    else:
        reason = "authorized after the deadline: hold released" if late else "cancelled at Plural"
    fields: dict[str, Any] = {"plural_status": cancelled.status}
    if late:
        fields["finished_late"] = True
    state_fact(d, run, Fact.CANCEL_CONFIRMED, reason, **fields)


def expire_hold(d: Deps, run: Run, c: Checkout) -> None:
    """An authorization with no delivery by its capture deadline is released before it lapses."""
    if c.capture_deadline_at is None or d.clock() < c.capture_deadline_at:
        d.repo.note(c.id, states={State.AUTHORIZED}, claim=run.claim, finish=run.finished, next_due_at=c.capture_deadline_at)
        return
    d.engine.apply(c.id, Fact.HOLD_DUE, Source.TIMER, "no delivery by the capture deadline: releasing the hold",
                   run=run, fields={"cancel_reason": "HOLD_EXPIRED"})

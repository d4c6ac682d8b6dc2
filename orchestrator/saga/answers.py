"""Plural's answers about a checkout's order, checked before anything is adopted: what disagrees
with the checkout (``mismatch``: a person looks, ``flag``), and what an order that agrees states
(``order_fact``), handed to the engine (``settle``)."""

from __future__ import annotations

from typing import Any

from orchestrator.domain import saga
from orchestrator.domain.saga import Fact, Source, State
from orchestrator.plural import errors
from orchestrator.plural.models import Order
from orchestrator.saga.deps import Deps, log, text
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout, aware


def our_payment(c: Checkout, order: Order) -> Any:
    for payment in reversed(order.payments):
        if payment.merchant_payment_reference == c.merchant_payment_reference or payment.id == c.plural_payment_id:
            return payment
    return None


#: the checkout's error code when Plural's answer is not about its order as we made it
MISMATCH = "GATEWAY_MISMATCH"


class Mismatch(Exception):
    """Plural's order, looked up for a step, disagrees with the checkout (``mismatch``)."""


def expected_payment(c: Checkout) -> int:
    """What the card pays: the order amount, or for EMI the offer's payment amount (after instant
    discounts; the order itself keeps the full amount)."""
    return c.payment_amount or c.amount_value


def mismatch(d: Deps, c: Checkout, order: Order, *, found: bool = False) -> str | None:
    """What in Plural's order disagrees with the checkout, naming both values; None when it agrees.

    Checked: the reference, the order id once recorded, the type, the order amount and currency
    (the full amount, also for EMI), ``pre_auth``, our payment's amount and currency, what was
    captured and, for an order ``found`` by our reference (after an unknown outcome or a lost
    record), that no other checkout holds it already. A missing value disagrees too: it cannot be
    checked.
    """
    problems: list[str] = []

    def differ(what: str, ours: Any, theirs: Any) -> None:
        if ours != theirs:
            problems.append(f"{what} is {theirs!r} at Plural, {ours!r} here")

    differ("merchant_order_reference", c.merchant_order_reference, order.merchant_order_reference)
    if c.plural_order_id:
        differ("order_id", c.plural_order_id, order.order_id)
    if order.type is not None:
        differ("type", "CHARGE", order.type.upper())
    amount = order.order_amount
    differ("order_amount", c.amount_value, amount.value if amount else None)
    differ("currency", c.currency, amount.currency if amount else None)
    differ("pre_auth", c.pre_auth, order.pre_auth)
    expected = expected_payment(c)
    payment = our_payment(c, order)
    if payment is not None and payment.payment_amount is not None:
        differ("payment_amount", expected, payment.payment_amount.value)
        differ("payment currency", c.currency, payment.payment_amount.currency)
    view = saga.gateway_view(order.status, payment.status if payment else None)
    if payment is None and view in (saga.GatewayView.AUTHORIZED, saga.GatewayView.PROCESSED):
        problems.append(f"order is {order.status} at Plural with no payment {c.merchant_payment_reference}")
    captured = order.captured_amount()
    if captured > expected or (captured and not c.pre_auth and captured != expected):
        problems.append(f"captured is {captured} at Plural, {expected} here")
    if found:
        other = d.repo.by_plural_order(order.order_id)
        if other is not None and other.id != c.id:
            problems.append(f"order {order.order_id} belongs to checkout {other.id}")
    return text("; ".join(problems)) if problems else None


def flag(d: Deps, c: Checkout, problem: str, reason: str, source: Source, run: Run | None = None) -> bool:
    """Plural's answer disagrees with the checkout: the engine moves it to NEEDS_ATTENTION, with
    nothing of the answer adopted. True when it moved (one already there stays)."""
    log.error("saga.gateway_mismatch", source=source.value, problem=problem)
    moved = d.engine.apply(c.id, Fact.GATEWAY_MISMATCH, source, f"{reason}: Plural disagrees: {problem}", run=run,
                           fields={"error_code": MISMATCH, "error_message": text(problem)},
                           seen=c if run is None else None)
    return moved is not None


def order_fact(d: Deps, c: Checkout, order: Order) -> tuple[Fact | None, dict[str, Any]]:
    """What Plural's order states about this checkout, and the fields that go with it."""
    payment = our_payment(c, order)
    fact = saga.fact_of(saga.gateway_view(order.status, payment.status if payment else None))
    fields: dict[str, Any] = {"plural_status": order.status}
    if payment is not None and payment.payment_amount and fact in (Fact.PLURAL_AUTHORIZED, Fact.PLURAL_PROCESSED):
        fields["authorized_amount"] = payment.payment_amount.value
    if fact is Fact.PLURAL_AUTHORIZED:
        # the hold runs from Plural's authorization, never from when we heard of it
        now = d.clock()
        at = aware(payment.updated_at if payment is not None else None) or aware(order.updated_at) or now
        at = min(at, now)
        fields["authorized_at"] = at
        fields["capture_deadline_at"] = saga.capture_deadline(at, d.settings.hold_days, d.settings.hold_margin_seconds)
    if fact is Fact.PLURAL_PROCESSED:
        fields["captured_amount"] = order.captured_amount() or (
            payment.payment_amount.value if payment is not None and payment.payment_amount else 0)
    if fact in (Fact.PLURAL_PAYMENT_FAILED, Fact.PLURAL_FAILED):
        detail = payment.error_detail if payment is not None else None
        fields["error_code"] = (detail.code if detail and detail.code else "PAYMENT_FAILED")[:64]
        fields["error_message"] = text(detail.message if detail and detail.message else f"order {order.status}")
    if fact is Fact.PLURAL_CANCELLED and State(c.state) is State.CAPTURING:
        fields.update(error_code="HOLD_CANCELLED", error_message="the authorization was cancelled before the capture")
    return fact, fields


def settle(d: Deps, c: Checkout, order: Order, reason: str, source: Source = Source.POLL,
           run: Run | None = None) -> bool:
    """Hand Plural's view of the order to the engine, once checked against the checkout; True when
    the checkout moved."""
    problem = mismatch(d, c, order)
    if problem is not None:
        return flag(d, c, problem, reason, source, run)
    fact, fields = order_fact(d, c, order)
    if fact is None:
        return False
    moved = d.engine.apply(c.id, fact, source, f"{reason}: Plural reports {order.status}", run=run, fields=fields,
                           seen=c if run is None else None)
    return moved is not None


def find_order_id(d: Deps, run: Run, c: Checkout) -> str | None:
    """Plural's order id, looked up by our reference when a crash kept us from recording it."""
    if c.plural_order_id:
        return c.plural_order_id
    try:
        order = d.plural.get_order_by_reference(c.merchant_order_reference)
    except errors.NotFound:
        return None
    problem = mismatch(d, c, order, found=True)
    if problem is not None:
        raise Mismatch(problem)
    order_id = order.order_id
    d.repo.note(c.id, claim=run.claim, finish=run.finished, plural_order_id=order_id)
    c.plural_order_id = order_id
    return order_id

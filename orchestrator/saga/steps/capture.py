"""Capture a delivered pre-auth checkout under its capture reference."""

from __future__ import annotations

from orchestrator.domain.saga import Fact, Source, Step
from orchestrator.plural import errors
from orchestrator.plural.models import Amount, CaptureRequest, Order
from orchestrator.saga.answers import flag, mismatch, settle
from orchestrator.saga.calls import call_ahead, resolve
from orchestrator.saga.deps import TRANSIENT, Deps, retry_later, state_fact, text
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout


def captured_with(order: Order, reference: str) -> int | None:
    """The amount Plural captured under ``reference``, or None when it has no such capture."""
    for payment in order.payments:
        for capture in payment.capture_data or []:
            if capture.merchant_capture_reference == reference and capture.capture_amount:
                return capture.capture_amount.value
    return None


def _follow_capture(d: Deps, run: Run, c: Checkout, order: Order, reason: str, source: Source) -> bool:
    """Settle a capturing checkout from Plural's order, once checked; True when it moved."""
    amount = captured_with(order, c.merchant_capture_reference)
    asked = c.capture_amount or c.authorized_amount
    problem = mismatch(d, c, order)
    if problem is None and amount is not None and amount != asked:
        problem = f"capture {c.merchant_capture_reference} is {amount} at Plural, {asked} here"
    if problem is not None:
        return flag(d, c, problem, reason, source, run)
    if amount is not None:
        moved = d.engine.apply(c.id, Fact.PLURAL_PROCESSED, source, f"{reason}: captured", run=run,
                               fields={"captured_amount": amount, "plural_status": order.status})
        return moved is not None
    return settle(d, c, order, reason, source, run)


def capture_order(d: Deps, run: Run, c: Checkout) -> None:
    if run.unresolved(Step.CAPTURE_ORDER):
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CAPTURE_ORDER, exc)
        found = captured_with(order, c.merchant_capture_reference) is not None
        resolve(d, run, Step.CAPTURE_ORDER, "succeeded" if found else "failed", f"order {order.status}")
        if _follow_capture(d, run, c, order, "capture found at Plural", Source.POLL):
            return
    amount = c.capture_amount or c.authorized_amount
    request = CaptureRequest(merchant_capture_reference=c.merchant_capture_reference,
                             capture_amount=Amount(value=amount, currency=c.currency))
    got = call_ahead(d, run, Step.CAPTURE_ORDER, c.merchant_capture_reference,
                     lambda: d.plural.capture_order(c.plural_order_id, request), lambda o: o.status)
    if got.transient:
        return retry_later(d, run, c, Step.CAPTURE_ORDER, got.transient)
    if got.refused:
        exc = got.refused
        try:
            truth = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as again:
            return retry_later(d, run, c, Step.CAPTURE_ORDER, again)
        if not _follow_capture(d, run, c, truth, f"capture refused ({exc.code})", Source.POLL):
            state_fact(d, run, Fact.CAPTURE_REFUSED, f"capture refused ({exc.code}); the hold stands",
                       error_code=exc.code[:64], error_message=text(exc.message))
        return
    if not _follow_capture(d, run, c, got.result, "captured", Source.STEP):
        retry_later(d, run, c, Step.CAPTURE_ORDER, errors.ResponseFormatError("capture answer shows no capture"))

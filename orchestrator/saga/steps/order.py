"""Create Order at Plural under the checkout's reference (or find the one an earlier attempt made)."""

from __future__ import annotations

from orchestrator.domain.saga import Fact, Source, Step
from orchestrator.plural import errors
from orchestrator.plural.models import Amount, CreateOrderRequest, PurchaseDetails
from orchestrator.saga.answers import flag, mismatch
from orchestrator.saga.calls import call_ahead, resolve
from orchestrator.saga.deps import TRANSIENT, Deps, retry_later, state_fact, text
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout


def create_order(d: Deps, run: Run, c: Checkout) -> None:
    if run.unresolved(Step.CREATE_ORDER):
        try:
            order = d.plural.get_order_by_reference(c.merchant_order_reference)
        except errors.NotFound:
            resolve(d, run, Step.CREATE_ORDER, "failed", "no order at Plural")
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CREATE_ORDER, exc)
        else:
            problem = mismatch(d, c, order, found=True)
            resolve(d, run, Step.CREATE_ORDER, "failed" if problem else "succeeded", problem or order.order_id)
            if problem is not None:
                flag(d, c, problem, "order found by reference", Source.STEP, run)
                return
            state_fact(d, run, Fact.ORDER_CREATED, "order found by reference", plural_order_id=order.order_id,
                       plural_status=order.status)
            return
    callback = f"{d.settings.public_base_url.rstrip('/')}/callbacks/plural"
    request = CreateOrderRequest(
        merchant_order_reference=c.merchant_order_reference,
        order_amount=Amount(value=c.amount_value, currency=c.currency),
        pre_auth=c.pre_auth,
        # the browser always comes back through us: a hint to poll at once, then the merchant's URL
        callback_url=callback,
        failure_callback_url=callback,
        purchase_details=PurchaseDetails(customer=c.customer) if c.customer else None,
        notes=f"checkout {c.id}",
        cart_coupon_discount_amount=(Amount(value=c.cart_coupon_discount, currency=c.currency)
                                     if c.cart_coupon_discount else None),
    )
    got = call_ahead(d, run, Step.CREATE_ORDER, c.merchant_order_reference,
                     lambda: d.plural.create_order(request), lambda o: o.order_id)
    if got.transient:
        return retry_later(d, run, c, Step.CREATE_ORDER, got.transient)
    if got.refused:
        exc = got.refused
        state_fact(d, run, Fact.ORDER_REFUSED, f"order refused: {exc.code}", error_code=exc.code[:64],
                   error_message=text(exc.message))
        return
    order = got.result
    # Plural answers a repeated reference with the order it already has: it may not be ours. (No
    # other checkout can hold an order with our reference: references are unique here.)
    problem = mismatch(d, c, order)
    if problem is not None:
        flag(d, c, problem, "order created", Source.STEP, run)
        return
    state_fact(d, run, Fact.ORDER_CREATED, "order created", plural_order_id=order.order_id,
               plural_status=order.status)

"""Create Payment: the card goes to Plural once (then leaves the vault); the answer says native OTP or
the bank's page."""

from __future__ import annotations

from typing import Any

from orchestrator.domain.saga import Fact, Source, Step
from orchestrator.plural.models import (Amount, CardDetails, CreatePaymentRequest, DeviceInfo, Order, PaymentOption,
                                        PaymentRequest)
from orchestrator.saga.answers import flag, mismatch, our_payment
from orchestrator.saga.calls import call_ahead, resolve
from orchestrator.saga.deps import TRANSIENT, Deps, card_gone, retry_later, state_fact, text
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout


def create_payment(d: Deps, run: Run, c: Checkout) -> None:
    if run.unresolved(Step.CREATE_PAYMENT):
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CREATE_PAYMENT, exc)
        payment = our_payment(c, order)
        resolve(d, run, Step.CREATE_PAYMENT, "succeeded" if payment else "failed",
                 payment.id if payment else "no payment at Plural")
        if payment is not None:
            d.vault.drop_card(c.id)
            return _after_payment(d, run, c, order, "payment found at Plural")
    card = d.vault.card(c.id)
    if card is None:
        # an earlier run may have made the payment and dropped the card: ask Plural
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CREATE_PAYMENT, exc)
        if our_payment(c, order) is not None:
            return _after_payment(d, run, c, order, "payment found at Plural")
        return card_gone(d, run)
    request = CreatePaymentRequest(payments=[PaymentRequest(
        merchant_payment_reference=c.merchant_payment_reference,
        payment_method=c.payment_method,
        # EMI: what the offer says the card pays (the loan after instant discounts)
        payment_amount=Amount(value=c.payment_amount or c.amount_value, currency=c.currency),
        payment_option=PaymentOption(card_details=CardDetails(
            name=card.name, card_number=card.number, cvv=card.cvv, expiry_month=card.expiry_month,
            expiry_year=card.expiry_year, registered_mobile_number=card.registered_mobile_number)),
        offer_data={"offer_details": c.offer} if c.offer else None,
        device_info=DeviceInfo.model_validate(c.device_info) if c.device_info else None,
    )])
    got = call_ahead(d, run, Step.CREATE_PAYMENT, c.merchant_payment_reference,
                     lambda: d.plural.create_payment(c.plural_order_id, request), lambda o: o.order_id)
    if got.transient:
        return retry_later(d, run, c, Step.CREATE_PAYMENT, got.transient)
    d.vault.drop_card(c.id)
    if got.refused:
        exc = got.refused
        state_fact(d, run, Fact.PAYMENT_REFUSED, f"payment refused: {exc.code}", error_code=exc.code[:64],
                   error_message=text(exc.message))
        return
    _after_payment(d, run, c, got.result, "payment created")


def _after_payment(d: Deps, run: Run, c: Checkout, order: Order, reason: str) -> None:
    problem = mismatch(d, c, order)
    if problem is not None:
        flag(d, c, problem, reason, Source.STEP, run)
        return
    payment = our_payment(c, order)
    fields: dict[str, Any] = {"plural_payment_id": payment.id if payment else None,
                              "challenge_url": order.challenge_url, "plural_status": order.status}
    if payment is not None and payment.status == "FAILED":
        detail = payment.error_detail
        state_fact(d, run, Fact.PAYMENT_REFUSED, f"{reason}: payment failed", **fields,
                   error_code=(detail.code if detail and detail.code else "PAYMENT_FAILED")[:64],
                   error_message=text(detail.message if detail and detail.message else "payment failed"))
        return
    fact = Fact.PAYMENT_NATIVE_OTP if c.native_otp else Fact.PAYMENT_REDIRECT
    state_fact(d, run, fact, reason, **fields)

"""EMI's first step, before any order: Plural's offers for this order, the customer's choice taken,
that exact offer validated for this card."""

from __future__ import annotations

from typing import Any, Iterable

from orchestrator.domain import emi, methods
from orchestrator.domain.saga import Fact, Step
from orchestrator.plural.models import (Amount, CardDetails, OfferDiscoveryRequest, OfferValidationRequest, PaymentOption,
                                        ProductDetail)
from orchestrator.saga.calls import call_ahead
from orchestrator.saga.deps import Deps, card_gone, retry_later, state_fact, text
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout


def offer_terms(amount: int, currency: str, products: Iterable[tuple[str, int]], coupon: int | None
                ) -> dict[str, Any]:
    """An order's EMI terms as Plural's affordability calls take them (discovery and validation)."""
    details = [ProductDetail(product_code=code, product_amount=Amount(value=value, currency=currency))
               for code, value in products]
    return {"order_amount": Amount(value=amount, currency=currency), "product_details": details or None,
            "cart_coupon_discount_amount": Amount(value=coupon, currency=currency) if coupon else None}


def _emi_terms(c: Checkout) -> dict[str, Any]:
    products = [(p["product_code"], p["product_amount"]) for p in (c.emi_choice or {}).get("product_details") or []]
    return offer_terms(c.amount_value, c.currency, products, c.cart_coupon_discount)


def _offer_refused(d: Deps, run: Run, code: str, message: str) -> None:
    d.vault.drop_card(run.checkout_id)
    state_fact(d, run, Fact.OFFER_REFUSED, f"EMI offer refused: {code}", error_code=code[:64],
               error_message=text(message))


def check_offer(d: Deps, run: Run, c: Checkout) -> None:
    """EMI, before any order: discover the offers for this order (Plural's figures, not the
    backend's), take the customer's issuer and tenure, and have Plural validate exactly that offer
    for this card. Only ELIGIBLE goes on; anything else fails the checkout with its code."""
    card = d.vault.card(c.id)
    if card is None:
        return card_gone(d, run)
    terms = _emi_terms(c)
    debit = methods.rule(c.payment_method).discovery_names_card
    card_only = PaymentOption(card_details=CardDetails(card_number=card.number))
    # Debit EMI is offered per customer: Plural lists debit issuers for a named card
    discovery = OfferDiscoveryRequest(**terms, payment_option=card_only if debit else None)
    got = call_ahead(d, run, Step.CHECK_OFFER, None, lambda: d.plural.discover_offers(discovery),
                     lambda r: f"{len(r.issuers)} issuers", idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CHECK_OFFER, got.transient)
    if got.refused:
        return _offer_refused(d, run, got.refused.code, got.refused.message)
    choice = c.emi_choice or {}
    try:
        chosen = emi.choose(got.result.raw, str(choice.get("issuer_id")), str(choice.get("tenure_id")),
                            choice.get("expected_monthly_emi"), card_named=debit)
    except emi.OfferRefused as refused:
        return _offer_refused(d, run, refused.code, refused.message)
    validation = OfferValidationRequest(
        order_amount=terms["order_amount"], payment_amount=Amount(value=chosen.payment_amount, currency=c.currency),
        offer_data={"offer_details": chosen.offer_details}, payment_method=c.payment_method,
        payment_option=card_only, product_details=terms["product_details"],
        cart_coupon_discount_amount=terms["cart_coupon_discount_amount"])
    got = call_ahead(d, run, Step.CHECK_OFFER, None, lambda: d.plural.validate_offer(validation),
                     lambda r: r.code, idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CHECK_OFFER, got.transient)
    if got.refused:
        return _offer_refused(d, run, got.refused.code, got.refused.message)
    if got.result.code != "ELIGIBLE":
        return _offer_refused(d, run, got.result.code, got.result.message or "offer not eligible")
    state_fact(d, run, Fact.OFFER_ELIGIBLE, f"offer eligible: {chosen.offer_details.get('name')}, "
                                            f"{chosen.offer_details['tenure'].get('name')}, {chosen.monthly} a month",
               offer=chosen.offer_details, payment_amount=chosen.payment_amount)

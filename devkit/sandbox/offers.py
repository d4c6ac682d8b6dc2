"""The sandbox's EMI offer engine: discovery and exact validation against a configurable offer book
(``offer_book``: the models and the default book).

The book (``OfferBook``; JSON through ``SANDBOX_OFFERS_FILE`` or ``PUT /sandbox/offers``) holds
issuers (credit or debit bank, a minimum order amount every issuer must have, and a maximum), their tenures (months, rate,
processing fee, program and offer ids), a flat merchant-bank discount per tenure, and brand
offers per product (discount with its merchant share, INSTANT or POST subvention). The figures
are the sandbox's own arithmetic (``devkit.sandbox.emi``).

The default book reproduces Plural's Debit EMI document:

- discovery for 1,200,000 paise lists INDUSIND CC at 16 % with the first sample's figures;
- discovery for 2,000,000 paise of product ``redmi_1`` lists PNB CC with the second sample's
  brand tenures (10 % instant discount shared by merchant and brand, 5 % INSTANT or POST
  subvention) and bank tenures. That sample's *request* asks for 1,200,000 of product ``xyz``,
  which no reading of its response fits, so the response is reproduced for the order it describes;
- validation of the HDFC CC 3-month, 20 %, 50,000-paise merchant-bank-offer tenure is ELIGIBLE;
- the Debit EMI create-payment samples (HDFC DC 3 months, ICICI DC 36 months, 16 %) validate.

Validation compares every figure of the offer it receives with its own quote, exactly. The one
exception is named (``SAMPLE_EXCEPTIONS``): the document's create-payment sample quotes HDFC DC's
3-month tenure on 1,200,000 paise a paisa a month above the formula its discovery samples follow.

Refusals: ``NotEligible`` carries a code (``OFFER_NOT_FOUND``, ``OFFER_MISMATCH``,
``CARD_ISSUER_MISMATCH``, ``AMOUNT_LIMIT_EXCEEDED``: Plural's documented code for an amount
outside the allowed limits); ``BadRequest`` is malformed input (a 400).

Minimum order amounts: banks offer EMI only above a minimum, and Plural's documents publish
none. The default book's minimums are the sandbox's assumption: Rs 3,000 for INDUSIND CC and
the debit issuers, Rs 15,000 for PNB CC and HDFC CC (each below the amounts of the document's
samples). An issuer below its minimum is not listed by discovery, and an offer of it is refused
by validation and by Create Payment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from devkit.sandbox import cards, emi
# the book is part of this module's interface (``offers.OfferBook``, ``offers.DEFAULT_BOOK``)
from devkit.sandbox.offer_book import (DEFAULT_BOOK, DEFAULT_OFFERS, SAMPLE_EXCEPTIONS, BrandOffer, IssuerOffer,
                                       OfferBook, TenureOffer)

__all__ = ["DEFAULT_BOOK", "DEFAULT_OFFERS", "SAMPLE_EXCEPTIONS", "BadRequest", "BrandOffer", "IssuerOffer",
           "NotEligible", "OfferBook", "TenureOffer", "customer_pays", "discover", "order_terms", "price_tenure",
           "validate"]




class NotEligible(ValueError):
    """An offer that does not validate; ``code`` and the message say why."""

    def __init__(self, message: str, code: str = "OFFER_MISMATCH"):
        super().__init__(message)
        self.code = code


class BadRequest(ValueError):
    """Malformed input (a 400): ``field`` names it."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


# --- pricing ----------------------------------------------------------------------------

def _amt(value: int, currency: str) -> dict[str, Any]:
    return {"currency": currency, "value": value}


def _num(rate: Decimal) -> int | float:
    return int(rate) if rate == rate.to_integral_value() else float(rate)


def price_tenure(t: TenureOffer, amount: int, products: dict[str, int], coupon: int = 0,
                 currency: str = "INR") -> dict[str, Any] | None:
    """The tenure as Plural's discovery lists it for this order, or None when it does not apply
    (a brand tenure without its product, or figures that would be nonsense)."""
    details, instant, post = [], 0, 0
    discount = merchant_part = brand_part = 0
    if t.brands:
        for b in t.brands:
            product_amount = products.get(b.product_code)
            if product_amount is None:
                continue
            d = emi.share(product_amount, b.discount_pct)
            m = emi.share(d, b.merchant_share_pct)
            share = product_amount - d
            sub = 0
            if b.subvention_type == "INSTANT":
                sub = share - emi.instant_loan(share, b.subvention_pct)
                instant += sub
            elif b.subvention_type == "POST":
                sub = emi.share(share, b.subvention_pct)
                post += sub
            discount, merchant_part, brand_part = discount + d, merchant_part + m, brand_part + d - m
            detail: dict[str, Any] = {
                "product_code": b.product_code, "brand_id": b.brand_id,
                "product_offer_parameters": [{"program_type": "BRAND_OFFER", "offer_id": b.offer_id,
                                              "offer_parameter_id": b.offer_parameter_id}],
                "product_amount": _amt(product_amount, currency)}
            if b.subvention_type:
                detail["subvention"] = {"subvention_type": b.subvention_type, "percentage": _num(b.subvention_pct),
                                        "amount": _amt(sub, currency),
                                        "breakup": {"brand": {"amount": _amt(sub, currency)}}}
            if d:
                detail["discount"] = _brand_discount(b.discount_pct, d, m, currency)
            details.append(detail)
        if not details:
            return None
    elif t.bank_discount:
        discount = t.bank_discount
    base = amount - coupon - discount
    if base <= 0 or instant >= base:
        return None
    q = emi.tenure_figures(base, t.months, t.rate, instant_subvention=instant, post_subvention=post)
    if not q.offered:
        return None
    params = [{"program_type": t.program_type, "offer_id": t.offer_id, "offer_parameter_id": t.offer_parameter_id}]
    out: dict[str, Any] = {"tenure_id": t.tenure_id, "name": f"{t.months} Months", "tenure_type": "MONTH",
                           "tenure_value": t.months, "issuer_offer_parameters": params, "details": details,
                           "discount": {}}
    if details and discount:
        pct = t.brands[0].discount_pct if len(details) == 1 else None
        out["discount"] = _brand_discount(pct, discount, merchant_part, currency)
    elif discount:
        assert t.bank_discount_offer is not None
        params.append({"program_type": "MERCHANT_BANK_OFFER", "offer_id": t.bank_discount_offer[0],
                       "offer_parameter_id": t.bank_discount_offer[1]})
        out["discount"] = {"discount_type": "INSTANT", "amount": _amt(discount, currency)}
    out["loan_amount"] = _amt(q.loan, currency)
    if discount:
        out["total_discount_amount"] = _amt(discount, currency)
    out["net_payment_amount"] = _amt(q.total, currency)
    out["monthly_emi_amount"] = _amt(q.monthly, currency)
    out["total_emi_amount"] = _amt(q.total, currency)
    out["interest_amount"] = _amt(q.interest, currency)
    if q.subvention:
        out["total_subvention_amount"] = _amt(q.subvention, currency)
    out["interest_rate_percentage"] = _num(t.rate)
    out["processing_fee_details"] = {"amount": _amt(t.processing_fee, currency)}
    out["emi_type"] = q.emi_type
    return out


def customer_pays(tenure: dict[str, Any]) -> int:
    """What the customer's card pays for an offer this book priced: the loan plus the INSTANT
    subventions (the brand's share is paid to the lender up front, out of the price)."""
    instant = sum(d["subvention"]["amount"]["value"] for d in tenure["details"]
                  if (d.get("subvention") or {}).get("subvention_type") == "INSTANT")
    return tenure["loan_amount"]["value"] + instant


def _brand_discount(pct: Decimal | None, amount: int, merchant: int, currency: str) -> dict[str, Any]:
    out: dict[str, Any] = {"discount_type": "INSTANT"}
    if pct is not None:
        out["percentage"] = _num(pct)
    out["amount"] = _amt(amount, currency)
    out["breakup"] = {"merchant": {"amount": _amt(merchant, currency)},
                      "brand": {"amount": _amt(amount - merchant, currency)}}
    return out


# --- requests ---------------------------------------------------------------------------

def _int_value(node: Any, field: str) -> int:
    value = node.get("value") if isinstance(node, dict) else node
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{field} must be an amount in paise", field)
    if value < 0:
        raise BadRequest(f"{field} must not be negative", field)
    return value


def order_terms(request: dict[str, Any], products_from: list[Any] | None = None) -> tuple[int, str, dict[str, int], int]:
    """(amount, currency, products, cart coupon) of a discovery or validation request; 400s for nonsense."""
    order = request.get("order_amount")
    amount = _int_value(order, "order_amount")
    if amount <= 0:
        raise BadRequest("order_amount must be positive", "order_amount")
    currency = order.get("currency", "INR") if isinstance(order, dict) else "INR"
    products: dict[str, int] = {}
    items = request.get("product_details") if request.get("product_details") is not None else products_from
    if items is not None and not isinstance(items, list):
        raise BadRequest("product_details must be a list", "product_details")
    for item in items or []:
        if not isinstance(item, dict) or not isinstance(item.get("product_code"), str) or not item["product_code"]:
            raise BadRequest("each product needs a product_code", "product_details")
        value = _int_value(item.get("product_amount"), "product_amount")
        if value > amount:
            raise BadRequest("a product_amount exceeds the order amount", "product_amount")
        products[item["product_code"]] = products.get(item["product_code"], 0) + value
    if sum(products.values()) > amount:
        raise BadRequest("product amounts add up to more than the order amount", "product_details")
    coupon = 0
    if request.get("cart_coupon_discount_amount") is not None:
        coupon = _int_value(request["cart_coupon_discount_amount"], "cart_coupon_discount_amount")
        if coupon >= amount:
            raise BadRequest("cart_coupon_discount_amount must be below the order amount", "cart_coupon_discount_amount")
    return amount, currency, products, coupon


def _card_number(request: dict[str, Any]) -> str | None:
    details = ((request.get("payment_option") or {}).get("card_details") or {})
    number = details.get("card_number") if isinstance(details, dict) else None
    return str(number) if number else None


def _card_matches(issuer: IssuerOffer, card_number: str) -> bool:
    prof = cards.profile(card_number)
    return prof.issuer.upper() == issuer.bank.upper() and prof.card_type == issuer.card_type


def discover(request: dict[str, Any], offers: tuple[IssuerOffer, ...] = DEFAULT_OFFERS) -> dict[str, Any]:
    """Every issuer and tenure on offer for this order. Debit EMI is offered per customer: debit
    issuers are listed only when the request names a card, and a named card lists only its issuer."""
    amount, currency, products, coupon = order_terms(request)
    card = _card_number(request)
    issuers = []
    for issuer in offers:
        listed = _card_matches(issuer, card) if card else issuer.issuer_type != "DC_BANK"
        if not listed or not issuer.takes(amount):
            continue
        tenures = [p for t in issuer.tenures if (p := price_tenure(t, amount, products, coupon, currency))]
        if tenures:
            issuers.append({"id": issuer.id, "name": issuer.name, "issuer_type": issuer.issuer_type,
                            "priority": issuer.priority, "tenures": tenures, "issuer_data": {}})
    return {"issuers": issuers}


# --- validation -------------------------------------------------------------------------

_MONEY_FIGURES = ("loan_amount", "total_discount_amount", "net_payment_amount", "monthly_emi_amount",
                  "total_emi_amount", "interest_amount", "total_subvention_amount")


def validate(request: dict[str, Any], *, payment_method: str | None = None,
             offers: tuple[IssuerOffer, ...] = DEFAULT_OFFERS) -> None:
    """Raise ``NotEligible`` unless ``request['offer_data']`` is exactly one of our offers for this
    order, this payment amount, this method and this card."""
    details = (request.get("offer_data") or {}).get("offer_details") or {}
    tenure_in = details.get("tenure") if isinstance(details, dict) else None
    if not isinstance(tenure_in, dict):
        raise BadRequest("offer_data.offer_details.tenure is required", "offer_data")
    amount, currency, products, coupon = order_terms(request, tenure_in.get("details") or [])
    method = payment_method or request.get("payment_method")
    issuer = next((i for i in offers if str(details.get("id")) == i.id), None)
    if issuer is None or (details.get("name") is not None and details["name"] != issuer.name):
        raise NotEligible("no such issuer", "OFFER_NOT_FOUND")
    if details.get("issuer_type") is not None and details["issuer_type"] != issuer.issuer_type:
        raise NotEligible("issuer_type does not match the issuer", "OFFER_MISMATCH")
    wanted_type = {"DEBIT_EMI": "DC_BANK", "CREDIT_EMI": "CC_BANK"}.get(str(method))
    if wanted_type and issuer.issuer_type != wanted_type:
        raise NotEligible(f"{issuer.name} does not offer {method}", "OFFER_NOT_FOUND")
    tenure = next((t for t in issuer.tenures if str(tenure_in.get("tenure_id")) == t.tenure_id), None)
    if tenure is None:
        raise NotEligible(f"{issuer.name} has no tenure {tenure_in.get('tenure_id')}", "OFFER_NOT_FOUND")
    if not issuer.takes(amount):
        raise NotEligible(f"{issuer.name} offers EMI only on orders between {issuer.min_amount} and "
                          f"{issuer.max_amount or 'any'} paise", "AMOUNT_LIMIT_EXCEEDED")
    ours = price_tenure(tenure, amount, products, coupon, currency)
    if ours is None:
        raise NotEligible(f"{issuer.name}'s tenure {tenure.tenure_id} does not apply to this order", "OFFER_NOT_FOUND")
    _same_figures(tenure_in, ours, SAMPLE_EXCEPTIONS.get((issuer.id, tenure.tenure_id, amount)), currency)
    card = _card_number(request)
    if card is not None and not _card_matches(issuer, card):
        raise NotEligible(f"the card is not issued by {issuer.name}", "CARD_ISSUER_MISMATCH")
    payment = request.get("payment_amount")
    if payment is not None:
        expected = customer_pays(ours)
        if _int_value(payment, "payment_amount") != expected:
            raise NotEligible(f"payment_amount must be what the offer says the customer pays ({expected})",
                              "OFFER_MISMATCH")


def _same_figures(given: dict[str, Any], ours: dict[str, Any], exception: dict[str, int] | None,
                  currency: str) -> None:
    alternatives = [ours]
    if exception is not None:
        alternatives.append({**ours, **{k: _amt(v, currency) for k, v in exception.items()}})
    problems = [_differences(given, candidate) for candidate in alternatives]
    best = min(problems, key=len)
    if best:
        raise NotEligible("the offer does not match: " + "; ".join(best[:3]), "OFFER_MISMATCH")


def _differences(given: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    out = []
    for key in _MONEY_FIGURES:
        mine, theirs = ours.get(key), given.get(key)
        if mine is None and theirs is None:
            continue
        if mine is None:
            if (theirs or {}).get("value") not in (0, None):
                out.append(f"{key} is not part of this offer")
            continue
        if not isinstance(theirs, dict) or theirs.get("value") != mine["value"] or \
                theirs.get("currency", currency_of(mine)) != mine["currency"]:
            out.append(f"{key} must be {mine['value']} {mine['currency']}")
    fee = (ours.get("processing_fee_details") or {}).get("amount")
    for key in ("processing_fee_details", "processing_fee_amount"):
        node = given.get(key)
        theirs = (node or {}).get("amount") if key == "processing_fee_details" else node
        if node is not None and (not isinstance(theirs, dict) or theirs.get("value") != fee["value"]):
            out.append(f"processing fee must be {fee['value']}")
    rate = given.get("interest_rate_percentage")
    if rate is None or isinstance(rate, bool) or not isinstance(rate, (int, float, str)) or \
            Decimal(str(rate)) != Decimal(str(ours["interest_rate_percentage"])):
        out.append(f"interest_rate_percentage must be {ours['interest_rate_percentage']}")
    if given.get("tenure_value") != ours["tenure_value"]:
        out.append(f"tenure_value must be {ours['tenure_value']}")
    if given.get("emi_type") != ours["emi_type"]:
        out.append(f"emi_type must be {ours['emi_type']}")
    mine_params = {(p["offer_id"], p["offer_parameter_id"]) for p in ours["issuer_offer_parameters"]}
    their_params = {(str(p.get("offer_id")), str(p.get("offer_parameter_id")))
                    for p in given.get("issuer_offer_parameters") or [] if isinstance(p, dict)}
    if their_params and their_params != mine_params:
        out.append("issuer_offer_parameters do not match the offer")
    return out


def currency_of(node: dict[str, Any]) -> str:
    return str(node.get("currency", "INR"))

"""The sandbox's EMI offers: a default offer set, discovery and validation.

The default set is built so that Plural's own samples give Plural's own figures:

- discovery for an order of 1,200,000 paise lists INDUSIND CC at 16 % (the first sample);
- discovery for 2,000,000 paise of product ``redmi_1`` lists PNB CC with its brand tenures
  (10 % instant discount, 5 % INSTANT or POST subvention) and bank tenures (the second sample's
  figures; that sample's *request* asks for 1,200,000 of product ``xyz``, which no reading of its
  response fits, so the response is reproduced for the order it describes);
- validation of the HDFC CC 3-month, 20 %, 50,000-paise merchant-bank-offer tenure is ELIGIBLE;
- the Debit EMI create-payment samples (HDFC DC 3 months, ICICI DC 36 months, 16 %) validate.

Debit-card issuers are listed only when the request names a card (Debit EMI eligibility is per
customer); a request naming a card lists only that card's issuer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from orchestrator.core import emi
from orchestrator.sandbox import cards


@dataclass(frozen=True)
class BrandOffer:
    product_code: str
    brand_id: str
    offer_id: str
    offer_parameter_id: str
    discount_pct: Decimal
    merchant_share_pct: Decimal  # of the discount; the brand pays the rest
    subvention_type: str | None
    subvention_pct: Decimal


@dataclass(frozen=True)
class TenureOffer:
    tenure_id: str
    months: int
    rate: Decimal
    program_type: str
    offer_id: str
    offer_parameter_id: str
    processing_fee: int = 19900
    brand: BrandOffer | None = None
    bank_discount: int = 0  # flat INSTANT merchant-bank-offer discount, paise
    bank_discount_offer: tuple[str, str] | None = None


@dataclass(frozen=True)
class IssuerOffer:
    id: str
    name: str
    issuer_type: str
    bank: str
    priority: int
    tenures: tuple[TenureOffer, ...]
    min_amount: int = 0

    @property
    def card_type(self) -> str:
        return "DEBIT" if self.issuer_type == "DC_BANK" else "CREDIT"


def _brand(subvention: str) -> BrandOffer:
    return BrandOffer("redmi_1", "3", "309", "20", Decimal(10), Decimal(50), subvention, Decimal(5))


_SIXTEEN = Decimal(16)

DEFAULT_OFFERS: tuple[IssuerOffer, ...] = (
    IssuerOffer("23", "INDUSIND CC", "CC_BANK", "INDUSIND", 1, tuple(
        TenureOffer(str(i + 1), m, _SIXTEEN, "BANK_EMI", "1563", "63813")
        for i, m in enumerate((3, 6, 9, 12, 18, 24))
    )),
    IssuerOffer("25", "PNB CC", "CC_BANK", "PNB", 1, (
        TenureOffer("1", 3, _SIXTEEN, "BRAND_EMI", "309", "20", brand=_brand("INSTANT")),
        TenureOffer("12", 36, _SIXTEEN, "BANK_EMI", "1562", "63812"),
        TenureOffer("2", 6, _SIXTEEN, "BRAND_EMI", "309", "20", brand=_brand("POST")),
        TenureOffer("3", 9, _SIXTEEN, "BRAND_EMI", "309", "20", processing_fee=29900, brand=_brand("POST")),
        TenureOffer("4", 12, _SIXTEEN, "BANK_EMI", "1563", "63813"),
        TenureOffer("5", 18, _SIXTEEN, "BANK_EMI", "1595", "63850"),
        TenureOffer("6", 24, _SIXTEEN, "BANK_EMI", "1563", "63813"),
    ), min_amount=1500000),
    IssuerOffer("6", "HDFC CC", "CC_BANK", "HDFC", 1, (
        TenureOffer("1", 3, Decimal(20), "BANK_EMI", "1564", "63814", bank_discount=50000,
                    bank_discount_offer=("1523", "63566")),
        TenureOffer("2", 6, Decimal(20), "BANK_EMI", "1564", "63814", bank_discount=50000,
                    bank_discount_offer=("1523", "63566")),
    ), min_amount=1500000),
    IssuerOffer("7", "HDFC DC", "DC_BANK", "HDFC", 1, (
        TenureOffer("1", 3, _SIXTEEN, "BANK_EMI", "1562", "63812"),
        TenureOffer("2", 6, _SIXTEEN, "BANK_EMI", "1562", "63812"),
    )),
    IssuerOffer("2", "ICICI DC", "DC_BANK", "ICICI", 1, (
        TenureOffer("1", 3, _SIXTEEN, "BANK_EMI", "1562", "63812"),
        TenureOffer("12", 36, _SIXTEEN, "BANK_EMI", "1562", "63812"),
    )),
)


class NotEligible(ValueError):
    """An offer that does not validate; the message says why."""


def _amt(value: int, currency: str) -> dict[str, Any]:
    return {"currency": currency, "value": value}


def _num(rate: Decimal) -> int | float:
    return int(rate) if rate == rate.to_integral_value() else float(rate)


@dataclass
class Priced:
    tenure: TenureOffer
    quote: emi.TenureQuote
    discount: int
    merchant_discount: int = 0
    brand_discount: int = 0
    product: dict[str, Any] | None = field(default=None)


def price_tenure(tenure: TenureOffer, order_amount: int, products: dict[str, int]) -> Priced | None:
    """Every figure of one tenure for this order, or None when the tenure does not apply."""
    if tenure.brand is not None:
        product_amount = products.get(tenure.brand.product_code)
        if product_amount is None:
            return None
        discount = emi.percent_of(product_amount, tenure.brand.discount_pct)
        merchant = emi.percent_of(discount, tenure.brand.merchant_share_pct)
        q = emi.quote(order_amount, tenure.months, tenure.rate, discount=discount,
                      subvention_type=tenure.brand.subvention_type, subvention_pct=tenure.brand.subvention_pct)
        return Priced(tenure, q, discount, merchant, discount - merchant, {"product_amount": product_amount})
    discount = tenure.bank_discount if tenure.bank_discount < order_amount else 0
    q = emi.quote(order_amount, tenure.months, tenure.rate, discount=discount)
    return Priced(tenure, q, discount)


def tenure_json(p: Priced, currency: str) -> dict[str, Any]:
    t, q = p.tenure, p.quote
    params = [{"program_type": t.program_type, "offer_id": t.offer_id, "offer_parameter_id": t.offer_parameter_id}]
    out: dict[str, Any] = {
        "tenure_id": t.tenure_id,
        "name": f"{t.months} Months",
        "tenure_type": "MONTH",
        "tenure_value": t.months,
        "issuer_offer_parameters": params,
        "details": [],
        "discount": {},
    }
    if t.brand is not None:
        b = t.brand
        discount = {
            "discount_type": "INSTANT",
            "percentage": _num(b.discount_pct),
            "amount": _amt(p.discount, currency),
            "breakup": {"merchant": {"amount": _amt(p.merchant_discount, currency)},
                        "brand": {"amount": _amt(p.brand_discount, currency)}},
        }
        out["details"] = [{
            "product_code": b.product_code,
            "brand_id": b.brand_id,
            "product_offer_parameters": [{"program_type": "BRAND_OFFER", "offer_id": b.offer_id,
                                          "offer_parameter_id": b.offer_parameter_id}],
            "product_amount": _amt((p.product or {})["product_amount"], currency),
            "subvention": {
                "subvention_type": b.subvention_type,
                "percentage": _num(b.subvention_pct),
                "amount": _amt(q.subvention, currency),
                "breakup": {"brand": {"amount": _amt(q.subvention, currency)}},
            },
            "discount": discount,
        }]
        out["discount"] = discount
    elif p.discount:
        assert t.bank_discount_offer is not None
        params.append({"program_type": "MERCHANT_BANK_OFFER", "offer_id": t.bank_discount_offer[0],
                       "offer_parameter_id": t.bank_discount_offer[1]})
        out["discount"] = {"discount_type": "INSTANT", "amount": _amt(p.discount, currency)}
    out["loan_amount"] = _amt(q.loan, currency)
    if p.discount:
        out["total_discount_amount"] = _amt(p.discount, currency)
    out["net_payment_amount"] = _amt(q.net_payment, currency)
    out["monthly_emi_amount"] = _amt(q.monthly, currency)
    out["total_emi_amount"] = _amt(q.total, currency)
    out["interest_amount"] = _amt(q.interest, currency)
    if q.subvention:
        out["total_subvention_amount"] = _amt(q.subvention, currency)
    out["interest_rate_percentage"] = _num(t.rate)
    out["processing_fee_details"] = {"amount": _amt(t.processing_fee, currency)}
    out["emi_type"] = q.emi_type
    return out


def _issuer_matches_card(issuer: IssuerOffer, card_number: str | None) -> bool:
    if not card_number:
        return issuer.issuer_type != "DC_BANK"
    prof = cards.profile(card_number)
    return prof.issuer.upper() == issuer.bank and prof.card_type == issuer.card_type


def _products(request: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in request.get("product_details") or []:
        amount = (item.get("product_amount") or {}).get("value")
        if isinstance(item.get("product_code"), str) and isinstance(amount, int):
            out[item["product_code"]] = amount
    return out


def _card_number(request: dict[str, Any]) -> str | None:
    details = ((request.get("payment_option") or {}).get("card_details") or {})
    number = details.get("card_number")
    return str(number) if number else None


def discover(request: dict[str, Any], offers: tuple[IssuerOffer, ...] = DEFAULT_OFFERS) -> dict[str, Any]:
    amount = request["order_amount"]["value"]
    currency = request["order_amount"].get("currency", "INR")
    products, card = _products(request), _card_number(request)
    issuers = []
    for issuer in offers:
        if amount < issuer.min_amount or not _issuer_matches_card(issuer, card):
            continue
        tenures = [tenure_json(p, currency) for t in issuer.tenures if (p := price_tenure(t, amount, products))]
        if tenures:
            issuers.append({"id": issuer.id, "name": issuer.name, "issuer_type": issuer.issuer_type,
                            "priority": issuer.priority, "tenures": tenures, "issuer_data": {}})
    return {"issuers": issuers}


def _close(given: Any, expected: int, tolerance: int) -> bool:
    value = (given or {}).get("value") if isinstance(given, dict) else None
    return isinstance(value, int) and abs(value - expected) <= tolerance


def validate(request: dict[str, Any], *, payment_method: str | None = None,
             offers: tuple[IssuerOffer, ...] = DEFAULT_OFFERS) -> None:
    """Raise ``NotEligible`` unless the offer in ``request['offer_data']`` is one of ours, priced right."""
    details = (request.get("offer_data") or {}).get("offer_details") or {}
    tenure_in = details.get("tenure") or {}
    order_amount = request["order_amount"]["value"]
    method = payment_method or request.get("payment_method")
    card = _card_number(request)
    candidates = [i for i in offers if details.get("id") in (None, i.id)
                  and (not details.get("name") or details.get("name") == i.name)]
    if method == "DEBIT_EMI":
        candidates = [i for i in candidates if i.issuer_type == "DC_BANK"]
    elif method == "CREDIT_EMI":
        candidates = [i for i in candidates if i.issuer_type == "CC_BANK"]
    params = {(p.get("offer_id"), p.get("offer_parameter_id")) for p in tenure_in.get("issuer_offer_parameters") or []}
    months = tenure_in.get("tenure_value")
    for issuer in candidates:
        for tenure in issuer.tenures:
            if tenure_in.get("tenure_id") is not None and str(tenure_in["tenure_id"]) != tenure.tenure_id:
                continue
            if months is not None and months != tenure.months:
                continue
            if params and (tenure.offer_id, tenure.offer_parameter_id) not in params:
                continue
            products = _products(request) or ({tenure.brand.product_code: order_amount} if tenure.brand else {})
            priced = price_tenure(tenure, order_amount, products)
            if priced is None:
                continue
            _check_figures(tenure_in, priced, request)
            if card is not None and not _issuer_matches_card(issuer, card):
                raise NotEligible(f"card is not issued by {issuer.name}")
            if order_amount < issuer.min_amount:
                raise NotEligible(f"order amount below the offer minimum of {issuer.min_amount}")
            return
    raise NotEligible("no such offer and tenure")


def _check_figures(tenure_in: dict[str, Any], priced: Priced, request: dict[str, Any]) -> None:
    q = priced.quote
    rate = tenure_in.get("interest_rate_percentage")
    if rate is not None and Decimal(str(rate)) != priced.tenure.rate:
        raise NotEligible("interest rate does not match the offer")
    # Plural's own samples differ from the formula by a paisa a month: allow exactly that
    if not _close(tenure_in.get("loan_amount"), q.loan, 0):
        raise NotEligible(f"loan amount does not match the offer (expected {q.loan})")
    if not _close(tenure_in.get("monthly_emi_amount"), q.monthly, 1):
        raise NotEligible(f"monthly EMI does not match the offer (expected {q.monthly})")
    if "total_emi_amount" in tenure_in and not _close(tenure_in["total_emi_amount"], q.total, q.months):
        raise NotEligible(f"total EMI does not match the offer (expected {q.total})")
    if "total_discount_amount" in tenure_in and not _close(tenure_in["total_discount_amount"], priced.discount, 0):
        raise NotEligible("discount does not match the offer")
    payment = request.get("payment_amount")
    if payment is not None and not _close(payment, q.price - priced.discount, 0):
        raise NotEligible(f"payment amount must be the order amount less the discount ({q.price - priced.discount})")

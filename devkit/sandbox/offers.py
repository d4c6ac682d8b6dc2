"""The sandbox's EMI offer engine: a configurable offer book, discovery and exact validation.

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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from devkit.sandbox import cards, emi


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrandOffer(_Model):
    product_code: str
    brand_id: str
    offer_id: str
    offer_parameter_id: str
    discount_pct: Decimal = Field(default=Decimal(0), ge=0, lt=100)
    merchant_share_pct: Decimal = Field(default=Decimal(50), ge=0, le=100)  # of the discount; the brand pays the rest
    subvention_type: Literal["INSTANT", "POST"] | None = None
    subvention_pct: Decimal = Field(default=Decimal(0), ge=0, lt=100)


class TenureOffer(_Model):
    tenure_id: str
    months: int = Field(gt=0, le=120)
    rate: Decimal = Field(ge=0, le=60)
    program_type: str = "BANK_EMI"
    offer_id: str
    offer_parameter_id: str
    processing_fee: int = Field(default=19900, ge=0)
    brands: tuple[BrandOffer, ...] = ()
    bank_discount: int = Field(default=0, ge=0)  # flat INSTANT merchant-bank-offer discount, paise
    bank_discount_offer: tuple[str, str] | None = None


class IssuerOffer(_Model):
    id: str
    name: str
    issuer_type: Literal["CC_BANK", "DC_BANK"]
    bank: str  # the card issuer's name, as the card profile gives it
    priority: int = 1
    tenures: tuple[TenureOffer, ...]
    #: the smallest order (paise) this issuer offers EMI on: required, banks have minimums
    min_amount: int = Field(gt=0)
    max_amount: int | None = Field(default=None, gt=0)

    @property
    def card_type(self) -> str:
        return "DEBIT" if self.issuer_type == "DC_BANK" else "CREDIT"

    def takes(self, amount: int) -> bool:
        return amount >= self.min_amount and (self.max_amount is None or amount <= self.max_amount)


class OfferBook(_Model):
    issuers: tuple[IssuerOffer, ...]

    @model_validator(mode="after")
    def _unique(self) -> "OfferBook":
        ids = [i.id for i in self.issuers]
        if len(ids) != len(set(ids)):
            raise ValueError("issuer ids must be unique")
        for issuer in self.issuers:
            tenure_ids = [t.tenure_id for t in issuer.tenures]
            if len(tenure_ids) != len(set(tenure_ids)):
                raise ValueError(f"tenure ids of issuer {issuer.id} must be unique")
        return self


def _redmi(subvention: str) -> BrandOffer:
    return BrandOffer(product_code="redmi_1", brand_id="3", offer_id="309", offer_parameter_id="20",
                      discount_pct=Decimal(10), merchant_share_pct=Decimal(50), subvention_type=subvention,
                      subvention_pct=Decimal(5))


def _t(tenure_id: str, months: int, rate: int, offer: tuple[str, str], **extra: Any) -> TenureOffer:
    return TenureOffer(tenure_id=tenure_id, months=months, rate=Decimal(rate), offer_id=offer[0],
                       offer_parameter_id=offer[1], **extra)


_B1563, _B1562, _B1595, _B1564 = ("1563", "63813"), ("1562", "63812"), ("1595", "63850"), ("1564", "63814")
_HDFC_CC_OFFER = dict(bank_discount=50000, bank_discount_offer=("1523", "63566"))

DEFAULT_BOOK = OfferBook(issuers=(
    IssuerOffer(id="23", name="INDUSIND CC", issuer_type="CC_BANK", bank="INDUSIND", tenures=tuple(
        _t(str(i + 1), m, 16, _B1563) for i, m in enumerate((3, 6, 9, 12, 18, 24))), min_amount=300_000,
        max_amount=50_000_000),
    IssuerOffer(id="25", name="PNB CC", issuer_type="CC_BANK", bank="PNB", tenures=(
        _t("1", 3, 16, ("309", "20"), program_type="BRAND_EMI", brands=(_redmi("INSTANT"),)),
        _t("12", 36, 16, _B1562),
        _t("2", 6, 16, ("309", "20"), program_type="BRAND_EMI", brands=(_redmi("POST"),)),
        _t("3", 9, 16, ("309", "20"), program_type="BRAND_EMI", processing_fee=29900, brands=(_redmi("POST"),)),
        _t("4", 12, 16, _B1563),
        _t("5", 18, 16, _B1595),
        _t("6", 24, 16, _B1563),
    ), min_amount=1_500_000, max_amount=50_000_000),
    IssuerOffer(id="6", name="HDFC CC", issuer_type="CC_BANK", bank="HDFC", tenures=(
        _t("1", 3, 20, _B1564, **_HDFC_CC_OFFER),
        _t("2", 6, 20, _B1564, **_HDFC_CC_OFFER),
    ), min_amount=1_500_000, max_amount=50_000_000),
    IssuerOffer(id="7", name="HDFC DC", issuer_type="DC_BANK", bank="HDFC", tenures=(
        _t("1", 3, 16, _B1562),
        _t("2", 6, 16, _B1562),
    ), min_amount=300_000, max_amount=20_000_000),
    IssuerOffer(id="2", name="ICICI DC", issuer_type="DC_BANK", bank="ICICI", tenures=(
        _t("1", 3, 16, _B1562),
        _t("12", 36, 16, _B1562),
    ), min_amount=300_000, max_amount=20_000_000),
))
# the defaults reproduce the document for these order amounts (see the module docstring)
DEFAULT_OFFERS = DEFAULT_BOOK.issuers

#: Plural's own create-payment sample quotes HDFC DC's 3-month tenure on 1,200,000 paise at
#: 410,714 a month (total and net 1,232,142; interest 32,142) where the formula its discovery
#: samples follow gives 410,713. That one figure set is accepted by name, beside our own quote.
SAMPLE_EXCEPTIONS: dict[tuple[str, str, int], dict[str, int]] = {
    ("7", "1", 1_200_000): {"monthly_emi_amount": 410714, "total_emi_amount": 1232142,
                            "net_payment_amount": 1232142, "interest_amount": 32142},
}


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

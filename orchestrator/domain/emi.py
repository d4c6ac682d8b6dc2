"""EMI: Plural's affordability arithmetic and the choice of an offer. Pure and exact (rationals,
no floats); no HTTP, no database.

The arithmetic, as every figure of Plural's Debit EMI document shows it:

- monthly instalment: ``floor(P·r·(1+r)^n / ((1+r)^n − 1))`` with ``P`` the loan in paise,
  ``r`` = annual rate / 12 / 100 and ``n`` the tenure in months, never below ``ceil(P / n)`` (so
  rounding down never makes the interest negative; at 0 % it is exactly ``ceil(P / n)``);
- total = monthly × n, interest = total − loan, net payment = total;
- the base is the price less the cart coupon and every instant discount;
- an INSTANT subvention of p % on a product lowers the loan: the product's share of the base
  becomes ``round(share / (1 + p/100))`` and the subvention is the difference; a POST subvention
  leaves the loan alone and is p % of the share (paid back to the customer later);
- ``NO_COST`` when the subvention covers the interest, ``LOW_COST`` when it covers part,
  ``STANDARD`` when there is none.

What the customer pays for the order (the payment amount) is the loan plus any INSTANT
subvention: the price after the coupon and the instant discounts.

The choice: ``choose`` takes Plural's discovery answer as Plural sent it, finds the issuer and
tenure the customer picked, checks the monthly figure the customer was shown, and returns the
offer exactly as discovered (``offer_details`` for validation and the payment) — or refuses
with a code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import ceil, floor
from typing import Any

Rate = int | float | str | Decimal


def _rational(value: Rate) -> Fraction:
    return Fraction(Decimal(str(value)))


def _round_half_up(value: Fraction) -> int:
    return floor(value + Fraction(1, 2))


def monthly_instalment(loan: int, annual_rate_pct: Rate, months: int) -> int:
    if loan <= 0 or months <= 0:
        raise ValueError("loan and months must be positive")
    rate = _rational(annual_rate_pct)
    if rate < 0:
        raise ValueError("rate must not be negative")
    if rate == 0:
        return ceil(Fraction(loan, months))
    r = rate / 1200
    growth = (1 + r) ** months
    # rounding down may never make the instalments repay less than the loan (negative interest)
    return max(floor(loan * r * growth / (growth - 1)), ceil(Fraction(loan, months)))


def instant_subvention(amount: int, pct: Rate) -> tuple[int, int]:
    """(loan, subvention) when the brand pays ``pct`` % up front on ``amount``."""
    loan = _round_half_up(Fraction(amount) / (1 + _rational(pct) / 100))
    return loan, amount - loan


def post_subvention(amount: int, pct: Rate) -> int:
    return _round_half_up(amount * _rational(pct) / 100)


def percent_of(amount: int, pct: Rate) -> int:
    return _round_half_up(amount * _rational(pct) / 100)


def emi_type(interest: int, subvention: int) -> str:
    if subvention <= 0:
        return "STANDARD"
    return "NO_COST" if subvention >= interest else "LOW_COST"


@dataclass(frozen=True)
class TenureQuote:
    months: int
    annual_rate_pct: Decimal
    base: int                 # the price less the coupon and the instant discounts
    subvention: int           # instant + post
    instant_subvention: int
    loan: int
    monthly: int
    total: int
    interest: int
    emi_type: str

    @property
    def net_payment(self) -> int:
        return self.total

    @property
    def payment_amount(self) -> int:
        """What the customer's card pays for the order: the loan plus any instant subvention."""
        return self.loan + self.instant_subvention

    @property
    def sensible(self) -> bool:
        """A tenure worth offering: a loan, a monthly figure of at least a paisa, no negative interest."""
        return self.loan > 0 and self.monthly > 0 and self.interest >= 0


def figures(base: int, months: int, annual_rate_pct: Rate, *, instant: int = 0, post: int = 0) -> TenureQuote:
    """Every figure of one tenure on ``base`` paise, with the subventions already in paise."""
    if base <= 0:
        raise ValueError("the amount financed must be positive")
    if not 0 <= instant < base or post < 0:
        raise ValueError("subventions must be at least 0 and below the amount")
    loan = base - instant
    monthly = monthly_instalment(loan, annual_rate_pct, months)
    total = monthly * months
    interest = total - loan
    return TenureQuote(months=months, annual_rate_pct=Decimal(str(annual_rate_pct)), base=base,
                       subvention=instant + post, instant_subvention=instant, loan=loan, monthly=monthly,
                       total=total, interest=interest, emi_type=emi_type(interest, instant + post))


def quote(price: int, months: int, annual_rate_pct: Rate, *, discount: int = 0,
          subvention_type: str | None = None, subvention_pct: Rate = 0) -> TenureQuote:
    """One tenure for an order of ``price`` paise with one discount and one subvention on all of it."""
    if discount < 0 or discount >= price:
        raise ValueError("discount must be at least 0 and below the price")
    base = price - discount
    if subvention_type == "INSTANT":
        _loan, sub = instant_subvention(base, subvention_pct)
        return figures(base, months, annual_rate_pct, instant=sub)
    if subvention_type == "POST":
        return figures(base, months, annual_rate_pct, post=post_subvention(base, subvention_pct))
    if subvention_type is None:
        return figures(base, months, annual_rate_pct)
    raise ValueError(f"unknown subvention type {subvention_type!r}")


# --- choosing an offer from Plural's discovery answer ------------------------------------

class OfferRefused(ValueError):
    """The customer's choice cannot go on; ``code`` says why (the checkout fails with it)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _value(node: Any) -> int | None:
    value = node.get("value") if isinstance(node, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def payment_amount(tenure: dict[str, Any]) -> int:
    """What the offer says the customer's card pays: the loan plus every INSTANT subvention."""
    loan = _value(tenure.get("loan_amount"))
    if loan is None:
        raise OfferRefused("OFFER_MALFORMED", "the offer carries no loan amount")
    instant = 0
    for detail in tenure.get("details") or []:
        sub = (detail or {}).get("subvention") or {}
        if sub.get("subvention_type") == "INSTANT":
            instant += _value(sub.get("amount")) or 0
    return loan + instant


@dataclass(frozen=True)
class ChosenOffer:
    offer_details: dict[str, Any]   # exactly as discovered: the issuer's fields and the one tenure
    payment_amount: int

    @property
    def monthly(self) -> int:
        return _value(self.offer_details["tenure"].get("monthly_emi_amount")) or 0


def choose(discovery: dict[str, Any], issuer_id: str, tenure_id: str, expected_monthly: int | None, *,
           card_named: bool = False) -> ChosenOffer:
    """The customer's issuer and tenure from Plural's discovery answer, or ``OfferRefused``.

    ``card_named``: the discovery asked about the customer's card (Debit EMI), so Plural listed
    only that card's issuer; another issuer means the card is not theirs.
    """
    issuers = [i for i in discovery.get("issuers") or [] if isinstance(i, dict)]
    issuer = next((i for i in issuers if str(i.get("id")) == issuer_id), None)
    if issuer is None and card_named and issuers:
        names = ", ".join(str(i.get("name") or i.get("id")) for i in issuers)
        raise OfferRefused("CARD_ISSUER_MISMATCH", f"the card is not issued by issuer {issuer_id} (it is {names})")
    if issuer is None:
        raise OfferRefused("ISSUER_NOT_OFFERED", f"issuer {issuer_id} offers no EMI on this order"
                                                 + (" and card" if card_named else ""))
    tenure = next((t for t in issuer.get("tenures") or [] if isinstance(t, dict)
                   and str(t.get("tenure_id")) == tenure_id), None)
    if tenure is None:
        raise OfferRefused("TENURE_NOT_OFFERED", f"{issuer.get('name') or issuer_id} offers no tenure {tenure_id} on "
                                                 "this order")
    monthly = _value(tenure.get("monthly_emi_amount"))
    if monthly is None or monthly <= 0:
        raise OfferRefused("OFFER_MALFORMED", "the offer carries no monthly EMI")
    if expected_monthly is not None and expected_monthly != monthly:
        raise OfferRefused("OFFER_CHANGED", f"the monthly EMI is now {monthly}, not the {expected_monthly} "
                                            "the customer was shown")
    details = {k: copy.deepcopy(v) for k, v in issuer.items() if k not in ("tenures", "issuer_data")}
    details["tenure"] = copy.deepcopy(tenure)
    return ChosenOffer(details, payment_amount(tenure))


def summary(offer_details: dict[str, Any], currency: str) -> dict[str, Any]:
    """The chosen offer as the merchant's checkout shows it."""
    t = offer_details.get("tenure") or {}

    def money(key: str) -> dict[str, Any] | None:
        value = _value(t.get(key))
        return {"value": value, "currency": currency} if value is not None else None

    fee = _value((t.get("processing_fee_details") or {}).get("amount")) or _value(t.get("processing_fee_amount"))
    return {
        "issuer": {"id": offer_details.get("id"), "name": offer_details.get("name"),
                   "issuer_type": offer_details.get("issuer_type")},
        "tenure": {"tenure_id": t.get("tenure_id"), "name": t.get("name"), "months": t.get("tenure_value")},
        "interest_rate_percentage": t.get("interest_rate_percentage"),
        "emi_type": t.get("emi_type"),
        "monthly_emi_amount": money("monthly_emi_amount"),
        "total_emi_amount": money("total_emi_amount"),
        "interest_amount": money("interest_amount"),
        "loan_amount": money("loan_amount"),
        "net_payment_amount": money("net_payment_amount"),
        "discount_amount": money("total_discount_amount"),
        "subvention_amount": money("total_subvention_amount"),
        "processing_fee": {"value": fee, "currency": currency} if fee is not None else None,
        "payment_amount": {"value": payment_amount(t), "currency": currency},
    }

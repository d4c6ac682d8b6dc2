"""EMI arithmetic, as Plural's affordability figures show it. Pure and exact (rationals, no floats).

- monthly instalment: ``floor(P·r·(1+r)^n / ((1+r)^n − 1))`` with ``P`` the loan in paise,
  ``r`` = annual rate / 12 / 100 and ``n`` the tenure in months (0 % interest: ``ceil(P / n)``);
- total = monthly × n, interest = total − loan;
- an INSTANT subvention of p % lowers the loan to ``round((price − discount) / (1 + p/100))``
  and is the difference; a POST subvention leaves the loan at price − discount and is p % of it;
- ``NO_COST`` when the subvention covers the interest, ``LOW_COST`` when it covers part,
  ``STANDARD`` when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from math import ceil, floor


def _rational(value: int | float | str | Decimal) -> Fraction:
    return Fraction(Decimal(str(value)))


def _round_half_up(value: Fraction) -> int:
    return floor(value + Fraction(1, 2))


def monthly_instalment(loan: int, annual_rate_pct: int | float | str | Decimal, months: int) -> int:
    if loan <= 0 or months <= 0:
        raise ValueError("loan and months must be positive")
    rate = _rational(annual_rate_pct)
    if rate < 0:
        raise ValueError("rate must not be negative")
    if rate == 0:
        return ceil(Fraction(loan, months))
    r = rate / 1200
    growth = (1 + r) ** months
    return floor(loan * r * growth / (growth - 1))


def instant_subvention(amount: int, pct: int | float | str | Decimal) -> tuple[int, int]:
    """(loan, subvention) when the brand pays ``pct`` % up front."""
    loan = _round_half_up(Fraction(amount) / (1 + _rational(pct) / 100))
    return loan, amount - loan


def post_subvention(loan: int, pct: int | float | str | Decimal) -> int:
    return _round_half_up(loan * _rational(pct) / 100)


def percent_of(amount: int, pct: int | float | str | Decimal) -> int:
    return _round_half_up(amount * _rational(pct) / 100)


def emi_type(interest: int, subvention: int) -> str:
    if subvention <= 0:
        return "STANDARD"
    return "NO_COST" if subvention >= interest else "LOW_COST"


@dataclass(frozen=True)
class TenureQuote:
    months: int
    annual_rate_pct: Decimal
    price: int
    discount: int
    subvention: int
    subvention_type: str | None
    loan: int
    monthly: int
    total: int
    interest: int
    emi_type: str

    @property
    def net_payment(self) -> int:
        return self.total


def quote(
    price: int,
    months: int,
    annual_rate_pct: int | float | str | Decimal,
    *,
    discount: int = 0,
    subvention_type: str | None = None,
    subvention_pct: int | float | str | Decimal = 0,
) -> TenureQuote:
    """Every figure of one tenure for an order of ``price`` paise."""
    if discount < 0 or discount >= price:
        raise ValueError("discount must be at least 0 and below the price")
    base = price - discount
    subvention = 0
    if subvention_type == "INSTANT":
        loan, subvention = instant_subvention(base, subvention_pct)
    elif subvention_type == "POST":
        loan = base
        subvention = post_subvention(loan, subvention_pct)
    elif subvention_type is None:
        loan = base
    else:
        raise ValueError(f"unknown subvention type {subvention_type!r}")
    monthly = monthly_instalment(loan, annual_rate_pct, months)
    total = monthly * months
    interest = total - loan
    return TenureQuote(
        months=months,
        annual_rate_pct=Decimal(str(annual_rate_pct)),
        price=price,
        discount=discount,
        subvention=subvention,
        subvention_type=subvention_type,
        loan=loan,
        monthly=monthly,
        total=total,
        interest=interest,
        emi_type=emi_type(interest, subvention),
    )

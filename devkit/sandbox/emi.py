"""The sandbox's EMI arithmetic: the figures Plural's offer discovery lists, computed as the
gateway would (the orchestrator only checks the offer it is given; this computes one).

From Plural's Debit EMI document, whose every discovery figure follows it (see the notes):

- monthly instalment ``floor(P·r·(1+r)^n / ((1+r)^n − 1))``, ``P`` the loan in paise,
  ``r`` = annual rate / 1200, ``n`` months; at 0 % the loan split in ``n``, rounded up;
- total EMI = monthly × n; interest = total − loan; net payment = total;
- an INSTANT subvention of p % on an amount ``A``: the loan is ``A / (1 + p/100)`` rounded to the
  paisa, and the subvention is ``A`` − loan; a POST subvention is p % of ``A``, the loan stays ``A``;
- the emi type: ``STANDARD`` without a subvention, ``NO_COST`` when it covers the interest,
  ``LOW_COST`` when it covers part of it.

Exact integer arithmetic: a rate such as ``"13.5"`` is read as the fraction it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


def _ratio(pct: Decimal | int | str) -> tuple[int, int]:
    """A percentage as (numerator, denominator) of a fraction of 1: 16 → (16, 100)."""
    num, den = Decimal(str(pct)).as_integer_ratio()
    if num < 0:
        raise ValueError("percentages are not negative")
    return num, den * 100


def _rounded(num: int, den: int) -> int:
    """num / den to the nearest integer, halves up (num, den positive)."""
    return (2 * num + den) // (2 * den)


def share(amount: int, pct: Decimal | int | str) -> int:
    """``pct`` % of ``amount`` paise, to the nearest paisa."""
    num, den = _ratio(pct)
    return _rounded(amount * num, den)


def instant_loan(amount: int, pct: Decimal | int | str) -> int:
    """The loan left on ``amount`` when the brand pays a ``pct`` % INSTANT subvention up front."""
    num, den = _ratio(pct)
    return _rounded(amount * den, den + num)


def monthly_emi(loan: int, annual_pct: Decimal | int | str, months: int) -> int:
    if loan <= 0 or months <= 0:
        raise ValueError("a loan and a tenure are positive")
    num, den = _ratio(annual_pct)
    den *= 12  # the monthly rate r = num / den
    if num == 0:
        return -(-loan // months)
    # P·r·(1+r)^n / ((1+r)^n − 1) with r = num/den, multiplied through by den^n
    grown = (den + num) ** months
    return (loan * num * grown) // (den * (grown - den ** months))


@dataclass(frozen=True)
class Figures:
    loan: int
    monthly: int
    total: int
    interest: int
    subvention: int
    emi_type: str

    @property
    def offered(self) -> bool:
        """Worth listing: a monthly figure of a paisa or more, and no negative interest."""
        return self.loan > 0 and self.monthly > 0 and self.interest >= 0


def tenure_figures(amount: int, months: int, annual_pct: Decimal | int | str, *,
                   instant_subvention: int = 0, post_subvention: int = 0) -> Figures:
    """One tenure on ``amount`` paise (the price less its discounts), the subventions in paise."""
    loan = amount - instant_subvention
    monthly = monthly_emi(loan, annual_pct, months) if loan > 0 else 0
    total = monthly * months
    interest = total - loan
    subvention = instant_subvention + post_subvention
    if subvention == 0:
        kind = "STANDARD"
    elif subvention >= interest:
        kind = "NO_COST"
    else:
        kind = "LOW_COST"
    return Figures(loan, monthly, total, interest, subvention, kind)

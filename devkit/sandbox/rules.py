"""The sandbox's own checks of what a merchant sends: card numbers and currencies.

Written for the gateway's side (it refuses what Plural would refuse), independently of the
orchestrator's checks, so that a mistake in either is seen by the other.

- A card number is 12 to 19 digits; spaces and dashes between them are tolerated.
- The Luhn (mod 10) check: from the rightmost digit, every second digit is doubled and its digits
  summed; the total is a multiple of 10.
- The network from the leading digits (the card schemes' published IIN ranges).
- A card expires at the end of its expiry month; the year is ``YY`` or ``YYYY``.
- Currencies: Plural's documents show INR only (and ``is_currency_supported`` for international
  cards on Get Card Details). The other codes are the sandbox's assumption of the currencies a
  merchant may have enabled for international cards.
"""

from __future__ import annotations

import datetime as dt

#: INR, and the currencies the sandbox assumes enabled for international cards (see above)
CURRENCIES = frozenset((
    "INR",
    "USD", "EUR", "GBP", "CHF", "SEK", "NOK", "DKK",
    "AED", "SAR", "QAR", "KWD", "OMR", "BHD",
    "SGD", "HKD", "MYR", "THB", "JPY", "AUD", "NZD", "CAD", "ZAR",
    "LKR", "NPR", "BDT",
))

_SEPARATORS = str.maketrans("", "", " -")

#: (first IIN, last IIN, digits compared, network), the narrower ranges first
_NETWORKS: tuple[tuple[int, int, int, str], ...] = (
    (2221, 2720, 4, "MASTERCARD"),
    (508, 508, 3, "RUPAY"),
    (353, 353, 3, "RUPAY"),
    (356, 356, 3, "RUPAY"),
    (34, 34, 2, "AMEX"),
    (37, 37, 2, "AMEX"),
    (30, 30, 2, "DINERS"),
    (36, 36, 2, "DINERS"),
    (38, 38, 2, "DINERS"),
    (51, 55, 2, "MASTERCARD"),
    (60, 60, 2, "RUPAY"),
    (65, 65, 2, "RUPAY"),
    (81, 82, 2, "RUPAY"),
    (4, 4, 1, "VISA"),
)


def card_digits(number: str) -> str | None:
    """The number's digits, or None when it is not 12 to 19 digits (spaces and dashes aside)."""
    digits = number.translate(_SEPARATORS)
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
        return None
    return digits


def well_formed(number: str) -> bool:
    return card_digits(number) is not None


def passes_luhn(number: str) -> bool:
    digits = card_digits(number)
    if digits is None:
        return False
    total = 0
    for position, digit in enumerate(int(d) for d in digits[::-1]):
        if position % 2 == 1:
            digit = sum(divmod(digit * 2, 10))
        total += digit
    return total % 10 == 0


def network(number: str) -> str:
    """VISA, MASTERCARD, RUPAY, AMEX, DINERS, or UNKNOWN."""
    digits = number.translate(_SEPARATORS)
    for low, high, width, name in _NETWORKS:
        head = digits[:width]
        if len(head) == width and head.isdigit() and low <= int(head) <= high:
            return name
    return "UNKNOWN"


def expired(month: str, year: str, today: dt.date) -> bool:
    """Has the card expired by ``today``? It is good until the last day of its expiry month."""
    full_year = int(year) + (2000 if len(year) <= 2 else 0)
    return full_year * 12 + int(month) < today.year * 12 + today.month

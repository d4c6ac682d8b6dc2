"""Card number checks that need no network: Luhn, network from the BIN, expiry."""

from __future__ import annotations

import datetime as dt
import re


def digits_only(number: str) -> str:
    """Strip spaces and dashes; anything else left makes the number invalid."""
    return re.sub(r"[ -]", "", number)


def luhn_ok(number: str) -> bool:
    digits = digits_only(number)
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def network_of(number: str) -> str:
    """Best-effort network from the leading digits (VISA, MASTERCARD, RUPAY, AMEX, DINERS, UNKNOWN)."""
    n = digits_only(number)
    if n.startswith("4"):
        return "VISA"
    if n[:2] in {"34", "37"}:
        return "AMEX"
    if n[:2] in {"36", "38", "30"}:
        return "DINERS"
    if n[:2] in {"51", "52", "53", "54", "55"} or (len(n) >= 4 and 2221 <= int(n[:4]) <= 2720):
        return "MASTERCARD"
    if n[:2] in {"60", "65", "81", "82"} or n[:3] in {"508", "353", "356"}:
        return "RUPAY"
    return "UNKNOWN"


def expiry_year(year: str) -> int:
    """Plural accepts ``"30"`` and ``"2030"``."""
    y = int(year)
    return 2000 + y if y < 100 else y


def expiry_in_future(month: str, year: str, today: dt.date) -> bool:
    m, y = int(month), expiry_year(year)
    if not 1 <= m <= 12:
        return False
    return (y, m) >= (today.year, today.month)


def valid_shape(number: str) -> bool:
    digits = digits_only(number)
    return digits.isdigit() and 12 <= len(digits) <= 19

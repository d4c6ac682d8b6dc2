"""The payment methods a checkout can use: ONE table of what each needs and where it starts.

Adding a method is a row here, its fields in the merchant's schemas, its step, and the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal, get_args

from orchestrator.domain.saga import State


class Method(str, Enum):
    CARD = "CARD"
    DEBIT_EMI = "DEBIT_EMI"
    CREDIT_EMI = "CREDIT_EMI"


#: the methods as the request model's type (a literal, so the OpenAPI document lists them inline)
MethodName = Literal["CARD", "DEBIT_EMI", "CREDIT_EMI"]
assert get_args(MethodName) == tuple(m.value for m in Method), "MethodName lists the table's methods"


@dataclass(frozen=True)
class MethodRule:
    """What a method needs from the merchant, and its saga's first state."""

    #: the card fields it needs besides the number
    card_fields: tuple[str, ...]
    #: an EMI offer (issuer and tenure from discovery), products and a cart coupon are allowed/needed
    emi: bool
    #: the first state: an EMI checkout first checks its offer with Plural (QUOTING)
    first_state: State
    #: Plural's native OTP may be used where the card supports it (Debit EMI always goes to the bank's page)
    native_otp: bool
    #: offer discovery names the card (Plural offers Debit EMI per customer)
    discovery_names_card: bool = False


CARD_DETAILS = ("name", "cvv", "expiry_month", "expiry_year")

METHODS: dict[Method, MethodRule] = {
    Method.CARD: MethodRule(card_fields=CARD_DETAILS, emi=False, first_state=State.NEW, native_otp=True),
    Method.DEBIT_EMI: MethodRule(card_fields=("registered_mobile_number",), emi=True, first_state=State.QUOTING,
                                 native_otp=False, discovery_names_card=True),
    Method.CREDIT_EMI: MethodRule(card_fields=CARD_DETAILS, emi=True, first_state=State.QUOTING, native_otp=True),
}

#: the default when a request names none
DEFAULT = Method.CARD
#: the methods that take an EMI offer, as a sentence for error messages
EMI_NAMES = " and ".join(m.value for m, rule in METHODS.items() if rule.emi)


def rule(method: str) -> MethodRule:
    """The table's row for ``method`` (a ``KeyError`` for a method not in the table)."""
    return METHODS[Method(method)]


def uses_native_otp(method: str, card_supports_it: bool) -> bool:
    """Native OTP where Plural offers it for the card and the method allows it."""
    return card_supports_it and rule(method).native_otp

"""Money is integer paise (minor units) with an ISO 4217 currency, everywhere."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt
from pydantic_core import PydanticCustomError

#: the largest amount one checkout, capture or refund may carry: ₹10 crore in paise. Larger amounts
#: are refused with AMOUNT_LIMIT_EXCEEDED (422); every money column is 64-bit regardless.
MAX_AMOUNT = 10_000_000_000

#: ISO 4217 codes accepted for orders. Plural settles in INR; international cards may be
#: charged in these currencies where the merchant has them enabled.
SUPPORTED_CURRENCIES = frozenset(
    {"INR", "USD", "EUR", "GBP", "AED", "SGD", "AUD", "CAD", "JPY", "CHF", "SAR", "QAR", "KWD", "OMR", "BHD",
     "HKD", "MYR", "NZD", "THB", "ZAR", "SEK", "NOK", "DKK", "LKR", "NPR", "BDT"}
)


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _supported(value: str) -> str:
    if value not in SUPPORTED_CURRENCIES:
        raise ValueError(f"unsupported currency {value!r}")
    return value


Currency = Annotated[str, BeforeValidator(_upper),
                     Field(pattern=r"^[A-Z]{3}$", json_schema_extra={"enum": sorted(SUPPORTED_CURRENCIES)}),
                     AfterValidator(_supported)]


def _within_limit(value: int) -> int:
    if value > MAX_AMOUNT:
        raise PydanticCustomError("amount_limit", "amount exceeds the maximum of {maximum} minor units",
                                  {"maximum": MAX_AMOUNT})
    return value


#: the maximum is stated in the schema and enforced with its own error (422 AMOUNT_LIMIT_EXCEEDED)
Amount = Annotated[StrictInt, Field(gt=0, json_schema_extra={"maximum": MAX_AMOUNT}), AfterValidator(_within_limit)]


class Money(BaseModel):
    """An amount in minor units. ``value`` must be a true integer (no floats, no strings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Amount
    currency: Currency = "INR"

    def __str__(self) -> str:
        return f"{self.value} {self.currency} (minor units)"

"""What the merchant sends: the request models of the merchant API, with their field rules.

Impossible requests are refused here (a 400 through the API), before any command runs.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from orchestrator.domain import methods
from orchestrator.domain.cards import digits_only, expiry_in_future
from orchestrator.domain.money import Money

REFERENCE = r"^[A-Za-z0-9_-]{1,50}$"
MOBILE = r"^[6-9][0-9]{9}$"


class CardIn(BaseModel):
    """The card. ``CARD`` and ``CREDIT_EMI`` need all of name, CVV and expiry; ``DEBIT_EMI`` needs
    the number and the mobile number registered with the bank (CVV and expiry optional, as in
    Plural's Debit EMI samples)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    number: str = Field(repr=False, pattern=r"^(?:\d[ -]?){11,18}\d$",
                        description="12 to 19 digits; spaces or dashes between them are allowed; Luhn-checked")
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    cvv: str | None = Field(default=None, repr=False, pattern=r"^\d{3,4}$")
    expiry_month: Annotated[str, Field(pattern=r"^(0?[1-9]|1[0-2])$")] | None = None
    expiry_year: Annotated[str, Field(pattern=r"^(\d{2}|\d{4})$")] | None = None
    registered_mobile_number: str | None = Field(
        default=None, repr=False, pattern=MOBILE, description="Debit EMI: the 10-digit mobile number registered "
                                                                "with the bank")

    @field_validator("number")
    @classmethod
    def _number(cls, value: str) -> str:
        digits = digits_only(value)
        if not re.fullmatch(r"\d{12,19}", digits):
            raise ValueError("card number must be 12 to 19 digits")
        return digits

    @field_validator("expiry_month")
    @classmethod
    def _month(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not 1 <= int(value) <= 12:
            raise ValueError("expiry_month must be 1 to 12")
        return f"{int(value):02d}"

    @model_validator(mode="after")
    def _not_expired(self) -> "CardIn":
        if (self.expiry_month is None) != (self.expiry_year is None):
            raise ValueError("expiry_month and expiry_year go together")
        if self.expiry_month and self.expiry_year and not expiry_in_future(self.expiry_month, self.expiry_year,
                                                                          dt.date.today()):
            raise ValueError("card has expired")
        return self

    def missing_for(self, payment_method: str) -> list[str]:
        return [k for k in methods.rule(payment_method).card_fields if getattr(self, k) is None]


class AddressIn(BaseModel):
    """A billing or shipping address as the merchant sends it (strict: Plural's own model is
    lenient because it parses Plural's answers)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    address1: Annotated[str, Field(max_length=100)] | None = None
    address2: Annotated[str, Field(max_length=100)] | None = None
    address3: Annotated[str, Field(max_length=100)] | None = None
    pincode: Annotated[str, Field(pattern=r"^[0-9]{4,10}$")] | None = None
    city: Annotated[str, Field(max_length=50)] | None = None
    state: Annotated[str, Field(max_length=50)] | None = None
    country: Annotated[str, Field(max_length=50)] | None = None


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email_id: Annotated[str, Field(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$")] | None = None
    first_name: Annotated[str, Field(max_length=50)] | None = None
    last_name: Annotated[str, Field(max_length=50)] | None = None
    customer_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,50}$")] | None = None
    mobile_number: Annotated[str, Field(pattern=r"^[0-9]{10,12}$")] | None = None
    country_code: Annotated[str, Field(pattern=r"^[0-9]{1,4}$")] | None = None
    billing_address: AddressIn | None = None
    shipping_address: AddressIn | None = None


class DeviceInfoIn(BaseModel):
    """The customer's browser or device, as the merchant's page read it: Plural's create-payment
    sample sends it with the card (for the issuer's 3-D Secure risk checks). Every value is a
    string, as in the sample; sent to Plural as given."""

    model_config = ConfigDict(extra="forbid", strict=True)

    browser_accept_header: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    browser_user_agent: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    browser_language: Annotated[str, Field(pattern=r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")] | None = None
    browser_screen_height: Annotated[str, Field(pattern=r"^[0-9]{1,6}$")] | None = None
    browser_screen_width: Annotated[str, Field(pattern=r"^[0-9]{1,6}$")] | None = None
    browser_timezone: Annotated[str, Field(pattern=r"^[+-]?[0-9]{1,4}$",
                                           description="minutes from UTC, as the browser gives it")] | None = None
    browser_window_size: Annotated[str, Field(pattern=r"^[0-9]{1,6}x[0-9]{1,6}$")] | None = None
    browser_screen_color_depth: Annotated[str, Field(pattern=r"^[0-9]{1,3}$")] | None = None
    browser_java_enabled_val: Literal["true", "false"] | None = None
    browser_javascript_enabled_val: Literal["true", "false"] | None = None
    device_channel: Annotated[str, Field(pattern=r"^[a-z_]{1,20}$",
                                         description="browser in Plural's sample")] | None = None


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_code: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    product_amount: Money


class EmiIn(BaseModel):
    """The customer's choice from offer discovery: an issuer and one of its tenures."""

    model_config = ConfigDict(extra="forbid")

    issuer_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="issuers[].id from discovery")
    tenure_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$", description="issuers[].tenures[].tenure_id")
    expected_monthly_emi: Money | None = Field(
        default=None, description="the monthly EMI the customer was shown; a different current figure fails the "
                                  "checkout with OFFER_CHANGED")


class EmiTerms(BaseModel):
    """What an EMI order is: its amount, the products on it, a cart coupon. Shared by discovery and
    checkouts; impossible terms are refused before anything is asked of Plural."""

    amount: Money
    product_details: Annotated[list[ProductIn], Field(max_length=50)] | None = None
    cart_coupon_discount_amount: Money | None = None

    @model_validator(mode="after")
    def _terms(self) -> "EmiTerms":
        currency = self.amount.currency
        products = self.product_details or []
        if any(p.product_amount.currency != currency for p in products) or (
                self.cart_coupon_discount_amount and self.cart_coupon_discount_amount.currency != currency):
            raise ValueError(f"product and coupon amounts must be in {currency}")
        if any(p.product_amount.value > self.amount.value for p in products):
            raise ValueError("a product_amount exceeds the order amount")
        if sum(p.product_amount.value for p in products) > self.amount.value:
            raise ValueError("product amounts add up to more than the order amount")
        if self.cart_coupon_discount_amount and self.cart_coupon_discount_amount.value >= self.amount.value:
            raise ValueError("cart_coupon_discount_amount must be below the order amount")
        return self


class DiscoveryCardIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    number: str = Field(repr=False, pattern=r"^(?:\d[ -]?){11,18}\d$")


class DiscoveryIn(EmiTerms):
    """Offer discovery. Name the customer's card to see Debit EMI issuers (Plural offers Debit
    EMI per customer); the card number is passed to Plural and kept nowhere."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    card: DiscoveryCardIn | None = None


class CheckoutIn(EmiTerms):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    merchant_order_reference: Annotated[str, Field(pattern=REFERENCE)] | None = None
    pre_auth: StrictBool = False
    payment_method: methods.MethodName = methods.DEFAULT.value
    card: CardIn
    emi: EmiIn | None = Field(default=None, description=f"required for {methods.EMI_NAMES}")
    customer: CustomerIn | None = None
    callback_url: Annotated[str, Field(pattern=r"^https?://", max_length=500)] | None = None
    failure_callback_url: Annotated[str, Field(pattern=r"^https?://", max_length=500)] | None = None
    device_info: DeviceInfoIn | None = Field(default=None, description="the customer's browser, sent to Plural "
                                                                       "with the payment")

    @model_validator(mode="after")
    def _method(self) -> "CheckoutIn":
        emi_method = methods.rule(self.payment_method).emi
        if emi_method and self.emi is None:
            raise ValueError(f"{self.payment_method} needs emi (issuer_id and tenure_id from offer discovery)")
        if not emi_method and (self.emi or self.product_details or self.cart_coupon_discount_amount):
            raise ValueError(f"emi, product_details and cart_coupon_discount_amount are for {methods.EMI_NAMES}")
        if emi_method and self.amount.currency != "INR":
            raise ValueError("EMI is offered in INR only")
        if self.emi and self.emi.expected_monthly_emi and self.emi.expected_monthly_emi.currency != "INR":
            raise ValueError("expected_monthly_emi must be in INR")
        missing = self.card.missing_for(self.payment_method)
        if missing:
            raise ValueError(f"{self.payment_method} needs card." + ", card.".join(missing))
        return self


class DeliveryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capture_amount: Money | None = None


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Money | None = None
    merchant_refund_reference: Annotated[str, Field(pattern=REFERENCE)] | None = None


class OTPIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    otp: str = Field(pattern=r"^\d{4,8}$", repr=False)

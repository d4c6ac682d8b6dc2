"""Typed request and response models for every Plural endpoint.

They accept every sample request and parse every sample response in Plural's documents; a field
Plural adds later is kept (``extra="allow"``), never fatal. Card numbers, CVVs and the identifier
sent to Get Card Details are ``SecretStr``: hidden in ``repr`` and logs, revealed only when the
request body is serialised for the wire (``model_dump(mode="json")``).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PrivateAttr, SecretStr


def _to_str(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


#: Plural's samples send some references and amounts as numbers; they are strings on the wire.
Str = Annotated[str, BeforeValidator(_to_str)]
Secret = Annotated[
    SecretStr,
    BeforeValidator(_to_str),
    PlainSerializer(lambda s: s.get_secret_value(), return_type=str, when_used="json"),
]


class PluralModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The JSON body to send: no ``None`` fields, secrets revealed."""
        return self.model_dump(mode="json", exclude_none=True)


class Amount(PluralModel):
    value: int
    currency: str = "INR"


# --- token ------------------------------------------------------------------------------


class TokenRequest(PluralModel):
    client_id: str
    client_secret: Secret
    grant_type: str = "client_credentials"


class TokenResponse(PluralModel):
    access_token: str
    expires_in: int | None = None
    expires_at: dt.datetime | None = None

    def expiry_epoch(self, now: float) -> float:
        """Absolute expiry: ``expires_at`` when given, else now + ``expires_in``, else one hour."""
        if self.expires_at is not None:
            at = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=dt.timezone.utc)
            return at.timestamp()
        return now + (self.expires_in if self.expires_in is not None else 3600)


# --- orders -----------------------------------------------------------------------------


class Address(PluralModel):
    address1: str | None = None
    address2: str | None = None
    address3: str | None = None
    pincode: Str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None


class Customer(PluralModel):
    email_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    customer_id: Str | None = None
    mobile_number: Str | None = None
    country_code: Str | None = None
    billing_address: Address | None = None
    shipping_address: Address | None = None


class PurchaseDetails(PluralModel):
    customer: Customer | None = None
    merchant_metadata: dict[str, Any] | None = None


class CreateOrderRequest(PluralModel):
    merchant_order_reference: Str
    order_amount: Amount
    pre_auth: bool = False
    notes: str | None = None
    callback_url: str | None = None
    failure_callback_url: str | None = None
    purchase_details: PurchaseDetails | None = None
    cart_coupon_discount_amount: Amount | None = None
    allowed_payment_methods: list[str] | None = None


class CaptureData(PluralModel):
    merchant_capture_reference: Str | None = None
    capture_amount: Amount | None = None
    created_at: dt.datetime | None = None


class ErrorDetail(PluralModel):
    code: str | None = None
    message: str | None = None


class Payment(PluralModel):
    id: str
    merchant_payment_reference: Str | None = None
    status: str
    payment_amount: Amount | None = None
    payment_method: str | None = None
    payment_option: dict[str, Any] | None = None
    acquirer_data: dict[str, Any] | None = None
    capture_data: list[CaptureData] | None = None
    offer_data: dict[str, Any] | None = None
    convenience_fee_breakdown: dict[str, Any] | None = None
    error_detail: ErrorDetail | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class Order(PluralModel):
    order_id: str
    merchant_order_reference: Str | None = None
    type: str | None = None
    status: str
    challenge_url: str | None = None
    merchant_id: Str | None = None
    order_amount: Amount | None = None
    pre_auth: bool | None = None
    notes: str | None = None
    callback_url: str | None = None
    failure_callback_url: str | None = None
    purchase_details: PurchaseDetails | None = None
    payments: list[Payment] = Field(default_factory=list)
    parent_order_id: str | None = None
    integration_mode: str | None = None
    payment_retries_remaining: int | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None

    def latest_payment(self) -> Payment | None:
        return self.payments[-1] if self.payments else None

    def captured_amount(self) -> int:
        return sum(
            c.capture_amount.value for p in self.payments for c in (p.capture_data or []) if c.capture_amount
        )


class OrderEnvelope(PluralModel):
    data: Order


# --- payments ---------------------------------------------------------------------------


class CardDetails(PluralModel):
    name: str | None = None
    card_number: Secret
    cvv: Secret | None = None
    expiry_month: Str | None = None
    expiry_year: Str | None = None
    registered_mobile_number: Str | None = None


class PaymentOption(PluralModel):
    card_details: CardDetails | None = None


class DeviceInfo(PluralModel):
    """The customer's browser, as Plural's create-payment sample sends it (every value a string)."""

    browser_accept_header: Str | None = None
    browser_user_agent: Str | None = None
    browser_language: Str | None = None
    browser_screen_height: Str | None = None
    browser_screen_width: Str | None = None
    browser_timezone: Str | None = None
    browser_window_size: Str | None = None
    browser_screen_color_depth: Str | None = None
    browser_java_enabled_val: Str | None = None
    browser_javascript_enabled_val: Str | None = None
    device_channel: Str | None = None


class PaymentRequest(PluralModel):
    merchant_payment_reference: Str
    payment_method: str
    payment_amount: Amount
    payment_option: PaymentOption
    device_info: DeviceInfo | None = None
    offer_data: dict[str, Any] | None = None


class CreatePaymentRequest(PluralModel):
    payments: list[PaymentRequest] = Field(min_length=1)


class CardIdentifier(PluralModel):
    payment_identifier: Secret
    payment_reference_type: str = "CARD"


class CardDetailsRequest(PluralModel):
    amount: Str | None = None
    card_details: list[CardIdentifier] = Field(min_length=1)


class CardInfo(PluralModel):
    card_network: str | None = None
    card_issuer: str | None = None
    card_type: str | None = None
    card_category: str | None = None
    is_international_card: bool | None = None
    is_native_otp_supported: bool = False
    country_code: str | None = None
    currency: str | None = None
    is_currency_supported: bool | None = None


class CardDetailsResponse(PluralModel):
    card_payment_details: list[CardInfo] = Field(default_factory=list)


# --- native OTP -------------------------------------------------------------------------


class OTPRequest(PluralModel):
    payment_id: str


class SubmitOTPRequest(PluralModel):
    payment_id: str
    otp: Secret


class OTPMeta(PluralModel):
    resend_after: Str | None = None


class OTPResponse(PluralModel):
    status: str | None = None
    next: list[str] = Field(default_factory=list)
    meta_data: OTPMeta | None = None

    @property
    def resend_after_seconds(self) -> int | None:
        if self.meta_data is None or self.meta_data.resend_after in (None, ""):
            return None
        return int(float(self.meta_data.resend_after))


# --- capture, refund --------------------------------------------------------------------


class CaptureRequest(PluralModel):
    merchant_capture_reference: Str
    capture_amount: Amount | None = None


class RefundRequest(PluralModel):
    merchant_order_reference: Str
    order_amount: Amount | None = None
    merchant_metadata: dict[str, Any] | None = None


# --- affordability (EMI offers) ---------------------------------------------------------


class OfferParameter(PluralModel):
    program_type: str
    offer_id: Str
    offer_parameter_id: Str


class ProductDetail(PluralModel):
    product_code: str
    product_amount: Amount
    product_coupon_discount_amount: Str | None = None


class OfferDiscoveryRequest(PluralModel):
    order_amount: Amount
    product_details: list[ProductDetail] | None = None
    cart_coupon_discount_amount: Str | Amount | None = None
    payment_option: PaymentOption | None = None


class FeeDetails(PluralModel):
    amount: Amount | None = None


class Tenure(PluralModel):
    tenure_id: Str
    name: str | None = None
    tenure_type: str | None = None
    tenure_value: int
    issuer_offer_parameters: list[OfferParameter] = Field(default_factory=list)
    details: list[dict[str, Any]] = Field(default_factory=list)
    discount: dict[str, Any] | None = None
    loan_amount: Amount
    total_discount_amount: Amount | None = None
    net_payment_amount: Amount | None = None
    monthly_emi_amount: Amount
    total_emi_amount: Amount | None = None
    interest_amount: Amount | None = None
    total_subvention_amount: Amount | None = None
    interest_rate_percentage: int | float  # 16 stays 16, 13.5 stays 13.5
    processing_fee_details: FeeDetails | None = None
    processing_fee_amount: Amount | None = None
    emi_type: str | None = None


class Issuer(PluralModel):
    id: Str
    name: str
    issuer_type: str | None = None
    priority: int | None = None
    tenures: list[Tenure] = Field(default_factory=list)
    issuer_data: dict[str, Any] | None = None


class OfferDiscoveryResponse(PluralModel):
    issuers: list[Issuer] = Field(default_factory=list)
    #: the answer exactly as Plural sent it: offers are passed on (to the merchant, to validation,
    #: to the payment) from this, never re-serialized from the model
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw


class OfferDetails(PluralModel):
    id: Str | None = None
    name: str | None = None
    issuer_type: str | None = None
    priority: int | None = None
    tenure: Tenure


class OfferData(PluralModel):
    offer_details: OfferDetails


class OfferValidationRequest(PluralModel):
    order_amount: Amount
    payment_amount: Amount
    offer_data: dict[str, Any]  # {"offer_details": ...} exactly as discovered
    payment_method: str
    payment_option: PaymentOption | None = None
    product_details: list[ProductDetail] | None = None
    cart_coupon_discount_amount: Amount | None = None


class OfferValidationResponse(PluralModel):
    code: str
    message: str | None = None


# --- what Plural sends us ---------------------------------------------------------------


class CallbackFields(PluralModel):
    """Fields posted back to the return URL. The documents use ``status`` and ``payment_status``."""

    order_id: str
    status: str | None = None
    payment_status: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    signature: str

    @property
    def effective_status(self) -> str | None:
        return self.status or self.payment_status


class WebhookEvent(PluralModel):
    event_type: str
    data: dict[str, Any]

    def order(self) -> Order | None:
        try:
            return Order.model_validate(self.data)
        except ValueError:
            return None

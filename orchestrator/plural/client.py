"""Plural's resources: one line per endpoint, each returning a typed model.

``replay_safe`` marks calls the requestor may repeat after a timeout or a 5xx: reads, read-only
POSTs, and writes that carry a merchant reference Plural de-duplicates on. Cancel and the OTP
calls are not repeated blindly: their outcome is resolved by asking Plural (Get Order).
"""

from __future__ import annotations

from typing import Any, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from orchestrator.plural import errors
from orchestrator.plural.models import (
    CaptureRequest,
    CardDetailsRequest,
    CardDetailsResponse,
    CreateOrderRequest,
    CreatePaymentRequest,
    OfferDiscoveryRequest,
    OfferDiscoveryResponse,
    OfferValidationRequest,
    OfferValidationResponse,
    Order,
    OrderEnvelope,
    OTPRequest,
    OTPResponse,
    RefundRequest,
    SubmitOTPRequest,
)
from orchestrator.plural.requestor import Requestor
from orchestrator.plural.token import MemoryTokenStore, RedisTokenStore
from orchestrator.plural.transport import PooledTransport, Transport

M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValueError as exc:
        raise errors.ResponseFormatError(f"unexpected {model.__name__} shape: {exc}", body=data) from None


def _order(data: Any) -> Order:
    return _parse(OrderEnvelope, data).data


def _p(segment: str) -> str:
    return quote(str(segment), safe="")


class PluralClient:
    def __init__(self, requestor: Requestor):
        self.requestor = requestor

    @classmethod
    def from_settings(cls, settings: Any, *, redis: Any = None, transport: Transport | None = None,
                      **overrides: Any) -> "PluralClient":
        store = (RedisTokenStore(redis, settings.plural_client_id, settings.card_encryption_key.get_secret_value())
                 if redis is not None else MemoryTokenStore())
        options: dict[str, Any] = dict(
            api_base=settings.api_base,
            token_url=settings.token_url,
            client_id=settings.plural_client_id,
            client_secret=settings.plural_client_secret.get_secret_value(),
            transport=transport or PooledTransport(pool_size=settings.pool_threads),
            token_store=store,
            connect_timeout=settings.http_connect_timeout,
            read_timeout=settings.http_read_timeout,
            max_attempts=settings.http_max_attempts,
            backoff_base=settings.http_backoff_base,
            backoff_cap=settings.http_backoff_cap,
            token_margin=settings.token_refresh_margin,
        )
        options.update(overrides)
        return cls(Requestor(**options))

    # --- orders -------------------------------------------------------------------------
    def create_order(self, request: CreateOrderRequest) -> Order:
        return _order(self.requestor.request("POST", "/api/pay/v1/orders", request, replay_safe=True))

    def get_order(self, order_id: str) -> Order:
        return _order(self.requestor.request("GET", f"/api/pay/v1/orders/{_p(order_id)}", replay_safe=True))

    def get_order_by_reference(self, merchant_order_reference: str) -> Order:
        path = f"/api/pay/v1/orders/reference/{_p(merchant_order_reference)}"
        return _order(self.requestor.request("GET", path, replay_safe=True))

    def capture_order(self, order_id: str, request: CaptureRequest) -> Order:
        path = f"/api/pay/v1/orders/{_p(order_id)}/capture"
        return _order(self.requestor.request("PUT", path, request, replay_safe=True))

    def cancel_order(self, order_id: str) -> Order:
        path = f"/api/pay/v1/orders/{_p(order_id)}/cancel"
        return _order(self.requestor.request("PUT", path, replay_safe=False))

    def create_refund(self, order_id: str, request: RefundRequest) -> Order:
        path = f"/api/pay/v1/refunds/{_p(order_id)}"
        return _order(self.requestor.request("POST", path, request, replay_safe=True))

    # --- payments -----------------------------------------------------------------------
    def create_payment(self, order_id: str, request: CreatePaymentRequest) -> Order:
        path = f"/api/pay/v1/orders/{_p(order_id)}/payments"
        return _order(self.requestor.request("POST", path, request, replay_safe=True))

    def get_card_details(self, request: CardDetailsRequest) -> CardDetailsResponse:
        data = self.requestor.request("POST", "/api/pay/v1/getCardDetails", request, replay_safe=True)
        return _parse(CardDetailsResponse, data)

    # --- native OTP ---------------------------------------------------------------------
    def generate_otp(self, payment_id: str) -> OTPResponse:
        data = self.requestor.request("POST", "/api/pay/v1/otp/generate", OTPRequest(payment_id=payment_id),
                                      replay_safe=False, otp_call=True)
        return _parse(OTPResponse, data)

    def submit_otp(self, payment_id: str, otp: str) -> OTPResponse:
        body = SubmitOTPRequest(payment_id=payment_id, otp=otp)
        data = self.requestor.request("POST", "/api/pay/v1/otp/submit", body, replay_safe=False, otp_call=True)
        return _parse(OTPResponse, data)

    def resend_otp(self, payment_id: str) -> OTPResponse:
        data = self.requestor.request("POST", "/api/pay/v1/otp/resend", OTPRequest(payment_id=payment_id),
                                      replay_safe=False, otp_call=True)
        return _parse(OTPResponse, data)

    # --- affordability ------------------------------------------------------------------
    def discover_offers(self, request: OfferDiscoveryRequest) -> OfferDiscoveryResponse:
        data = self.requestor.request("POST", "/api/affordability/v1/offer/discovery", request, replay_safe=True)
        found = _parse(OfferDiscoveryResponse, data)
        found._raw = data
        return found

    def validate_offer(self, request: OfferValidationRequest) -> OfferValidationResponse:
        data = self.requestor.request("POST", "/api/affordability/v1/offer/validate", request, replay_safe=True)
        return _parse(OfferValidationResponse, data)

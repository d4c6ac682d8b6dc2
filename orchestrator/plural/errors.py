"""One exception tree for everything the Plural client can raise.

::

    PluralError
    ├── TransportError              no HTTP answer was read
    │   ├── ConnectionFailed        never reached Plural (refused, DNS, connect timeout): safe to retry
    │   │   └── TokenLockTimeout    the token refresh lock was not taken in time (another process
    │   │                           holds it): nothing was sent
    │   └── OutcomeUnknown          sent, no answer (read timeout, reset): Plural may have acted;
    │                               resolve by asking Plural (Get Order / order by reference).
    │                               Also: a retry refused with a 4xx after such an attempt
    ├── APIError                    Plural answered with an error body
    │   ├── InvalidRequest          400, 405  (INVALID_REQUEST, ...)
    │   ├── AuthenticationFailed    401, 403  (UNAUTHORIZED)
    │   ├── NotFound                404       (ORDER_NOT_FOUND, ...)
    │   ├── Conflict                409       (DUPLICATE_REQUEST, ...)
    │   ├── BusinessRuleError       422       the request was understood and refused
    │   │   ├── PaymentDeclined     PAYMENT_DECLINED, CARD_EXPIRED, ...
    │   │   ├── OTPRejected         wrong OTP, resend refused, card not eligible for native OTP
    │   │   └── OfferNotEligible    an EMI offer that does not validate
    │   ├── RateLimited             429 (PAYMENT_RATE_LIMIT), may carry Retry-After
    │   └── ServerError             5xx: the outcome of a non-GET call is unknown
    ├── CredentialsRejected         the token call refused our client_id/secret (401 or 422, as
    │                               Plural's token reference lists): a configuration fault (a
    │                               rotated or mistyped secret), never a business refusal; the call
    │                               that wanted the token was not sent. Carries ``since``: when the
    │                               refusals began (the token store's shared flag)
    └── ResponseFormatError         a 2xx body that does not parse as the documented shape

Every ``APIError`` carries ``status``, ``code``, ``message``, ``request_id`` and ``details``
(``additional_error_details``). ``TransportError.may_have_reached_plural`` says whether the
request may have been acted on: an unknown outcome is not a failure.
"""

from __future__ import annotations

from typing import Any


class PluralError(Exception):
    """Base of every error raised by the Plural client."""

    #: may Plural have acted on the request (the outcome is unknown until asked)?
    may_have_reached_plural: bool = False
    request_id: str | None = None


class TransportError(PluralError):
    def __init__(self, message: str, *, request_id: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.request_id = request_id
        self.retry_after = retry_after


class ConnectionFailed(TransportError):
    may_have_reached_plural = False


class TokenLockTimeout(ConnectionFailed):
    """The access token's refresh lock (Redis) was not taken in time: try again later."""


class OutcomeUnknown(TransportError):
    may_have_reached_plural = True


class CredentialsRejected(PluralError):
    """Plural refused our client credentials at the token call. Not an ``APIError``: no step may
    read it as Plural's answer to the call it wanted to make (that call was never sent)."""

    may_have_reached_plural = False

    def __init__(self, message: str, *, status: int, code: str | None = None, request_id: str | None = None,
                 since: float | None = None):
        super().__init__(f"credentials rejected: {status} {code or 'UNAUTHORIZED'}: {message}")
        self.status = status
        self.code = "CREDENTIALS_REJECTED"
        self.plural_code = code
        self.message = message
        self.request_id = request_id
        #: epoch seconds: since when the token call has been refused (set by the token manager)
        self.since = since


#: what the token endpoint answers for client credentials it does not accept
CREDENTIALS_REFUSED_STATUSES = frozenset({401, 422})


class ResponseFormatError(PluralError):
    may_have_reached_plural = True

    def __init__(self, message: str, *, request_id: str | None = None, body: Any = None):
        super().__init__(message)
        self.request_id = request_id
        self.body = body


class APIError(PluralError):
    default_code = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(f"{status} {code or self.default_code}: {message}")
        self.status = status
        self.code = code or self.default_code
        self.message = message
        self.request_id = request_id
        self.details = details or {}
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message, "request_id": self.request_id}


class InvalidRequest(APIError):
    default_code = "INVALID_REQUEST"


class AuthenticationFailed(APIError):
    default_code = "UNAUTHORIZED"


class NotFound(APIError):
    default_code = "NOT_FOUND"


class Conflict(APIError):
    default_code = "DUPLICATE_REQUEST"


class BusinessRuleError(APIError):
    default_code = "UNPROCESSABLE"


class PaymentDeclined(BusinessRuleError):
    default_code = "PAYMENT_DECLINED"


class OTPRejected(BusinessRuleError):
    default_code = "OTP_REJECTED"


class OfferNotEligible(BusinessRuleError):
    default_code = "OFFER_NOT_ELIGIBLE"


class RateLimited(APIError):
    default_code = "PAYMENT_RATE_LIMIT"
    may_have_reached_plural = False


class ServerError(APIError):
    default_code = "INTERNAL_ERROR"
    may_have_reached_plural = True


DECLINE_CODES = frozenset(
    {"PAYMENT_DECLINED", "CARD_EXPIRED", "AMOUNT_LIMIT_EXCEEDED", "USER_AUTHENTICATION_FAILED", "PAYMENT_EXPIRED"}
)
OTP_CODES = frozenset({"INVALID_OTP", "OTP_RESEND_NOT_ALLOWED", "OTP_RESEND_LIMIT_REACHED", "CARD_NOT_ELIGIBLE",
                       "OTP_ATTEMPTS_EXHAUSTED", "OTP_NOT_GENERATED", "OTP_ALREADY_GENERATED"})


def error_class(status: int, code: str | None, *, otp_call: bool = False) -> type[APIError]:
    """Pick the exception class for an error answer. A small pure function with its own tests."""
    if status == 429:
        return RateLimited
    if status >= 500:
        return ServerError
    if status in (401, 403):
        return AuthenticationFailed
    if status == 404:
        return NotFound
    if status == 409:
        return Conflict
    if status == 422:
        if code == "OFFER_NOT_ELIGIBLE":
            return OfferNotEligible
        if otp_call or code in OTP_CODES:
            return OTPRejected
        if code in DECLINE_CODES:
            return PaymentDeclined
        return BusinessRuleError
    return InvalidRequest


def parse_error_body(body: Any) -> tuple[str | None, str, dict[str, Any]]:
    """(code, message, details) from any of Plural's error shapes.

    ``{"code", "message", "additional_error_details"}``, the token endpoint's
    ``{"error", "error_description"}`` and ``{"status", "message", "traceId"}``.
    """
    if not isinstance(body, dict):
        text = body if isinstance(body, str) else ""
        return None, text[:500] or "no error body", {}
    code = body.get("code") or body.get("error")
    if code is None and isinstance(body.get("status"), str):
        code = body["status"]
    message = body.get("message") or body.get("error_description") or ""
    details = body.get("additional_error_details") or {}
    if "traceId" in body:
        details = {**details, "trace_id": body["traceId"]}
    return (str(code) if code is not None else None), str(message), details if isinstance(details, dict) else {}

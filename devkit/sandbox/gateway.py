"""The sandbox gateway's business rules, in memory: Plural UAT as faithfully as its documents allow.

HTTP lives in ``devkit.sandbox.app``; this module only takes parsed JSON and returns
JSON-shaped dicts, or raises ``GatewayError`` with Plural's error body and HTTP status.

Statuses follow Plural: an order is ``CREATED``, ``PENDING`` once a payment is made, then
``AUTHORIZED`` (pre-auth) or ``PROCESSED``; capture (full → ``PROCESSED``, partial →
``PARTIALLY_CAPTURED``) only from ``AUTHORIZED``; cancel; refunds of captured orders; a failed
payment leaves the order ``ATTEMPTED`` while retries remain, ``FAILED`` after (and at once when
the OTP attempts are exhausted); a payment's expiry is checked on every path that could
authorize it (OTP submit, the bank page), answered ``PAYMENT_EXPIRED``. Every money
movement is written to the ledger.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import urlencode

from devkit.sandbox import cards, offers, rules
from devkit.sandbox.signing import callback_signature

REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
#: a reference in Plural's own samples that breaks the documented charset; accepted as the sample is
SEED_SAMPLE_REFERENCES = frozenset({"12334567$guid"})
#: the access token printed in Plural's samples, accepted so that every sample works as sent
SEED_SAMPLE_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIy"
    "fQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
#: client credentials in Plural's samples
SEED_SAMPLE_CLIENTS = {
    "a17ce30e-f88e-4f81-ada1-c3b4909ed232": "fgwei7egyhuggwp39w8rh",
    "1234567890": "asdfgwei7egyhuggwp39w8rh",
}
PAYMENT_METHODS = {"CARD": "cc", "DEBIT_EMI": "de", "CREDIT_EMI": "ce"}
#: an Indian mobile number as Debit EMI's registered_mobile_number (10 digits, starting 6 to 9)
MOBILE = re.compile(r"^[6-9][0-9]{9}$")
EVENT_FOR_STATUS = {
    "AUTHORIZED": "ORDER_AUTHORIZED",
    "PROCESSED": "ORDER_PROCESSED",
    "PARTIALLY_CAPTURED": "ORDER_PROCESSED",
    "CANCELLED": "ORDER_CANCELLED",
    "FAILED": "ORDER_FAILED",
    "ATTEMPTED": "PAYMENT_FAILED",
}


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    def body(self) -> dict[str, Any]:
        """Plural's error body: ``additional_error_details`` carries ``source``, ``step`` and
        ``reason`` and nothing else (no attempt counts, no resend timers: a client counts those
        itself). A ``field`` given to ``_bad`` is the ``source``."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            d = self.details
            out["additional_error_details"] = {"source": str(d.get("source") or d.get("field") or "request"),
                                               "step": str(d.get("step") or "validation"),
                                               "reason": str(d.get("reason") or self.message)}
        return out


def _bad(message: str, **details: Any) -> GatewayError:
    return GatewayError(400, "INVALID_REQUEST", message, details)


def _refused(message: str, code: str = "INVALID_REQUEST", **details: Any) -> GatewayError:
    return GatewayError(422, code, message, details)


@dataclass
class SandboxConfig:
    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    token_ttl: int = 3600
    callback_key: bytes = b"sandbox"
    public_url: str = "http://127.0.0.1:8700"
    merchant_id: str = "104359"
    correct_otp: str = "123456"
    otp_resend_after: int = 180
    otp_resend_limit: int = 3
    otp_max_attempts: int = 3
    payment_retries: int = 9
    refund_settle_seconds: float = 0.0
    fail_refunds: bool = False  # refunds settle as FAILED (REFUND_FAILED), for tests
    #: as strict as Plural documents: cancel only an AUTHORIZED order; a repeated reference while
    #: the first request is still in progress answers 409 DUPLICATE_REQUEST
    strict: bool = True
    #: a repeated merchant reference (order, payment, capture, refund): ``refuse`` answers 422
    #: DUPLICATE_REQUEST as Plural's error list says; ``replay`` returns the object already made (the
    #: SDK's reading of idempotency)
    duplicates: str = "refuse"
    #: a payment not completed in this time expires (PAYMENT_EXPIRED); 0: never
    payment_expiry_seconds: float = 900.0
    #: Plural's documented maximum order amount, in paise: larger orders answer 422 AMOUNT_LIMIT_EXCEEDED
    max_order_amount: int = 100_000_000
    #: a second Generate OTP for a payment: Plural's documents are silent (its reference lists 422
    #: for a payment not eligible for OTP generation). ``refuse`` answers 422 OTP_ALREADY_GENERATED
    #: (use Resend OTP); ``resend`` sends a fresh OTP and answers 200 as the first call did
    second_generate_otp: str = "refuse"
    #: the token's lifetime as Plural's token reference gives it (``at``: ``expires_at``, ISO 8601)
    #: or as the seeds' samples do (``in``: ``expires_in`` seconds): the documents disagree
    token_expiry: str = "at"
    #: the EMI offer book (issuers, tenures, rates, fees, discounts, subventions, limits)
    offers: offers.OfferBook = field(default_factory=lambda: offers.DEFAULT_BOOK)


@dataclass
class PaymentState:
    payment_id: str
    order_id: str
    card: cards.CardProfile | None
    method: str
    created_at: float = 0.0
    otp_sent_at: float | None = None
    otp_attempts: int = 0
    resends: int = 0
    acs_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))


def _rand(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Gateway:
    def __init__(self, config: SandboxConfig, *, clock: Callable[[], float] = time.time,
                 emit: Callable[[str, dict[str, Any]], None] | None = None):
        self.config = config
        self._base_clock = clock
        self.offset = 0.0  # tests move the sandbox's time forward (POST /sandbox/clock)
        self.clock = lambda: self._base_clock() + self.offset
        self.emit = emit or (lambda event_type, data: None)
        self.lock = threading.RLock()
        #: DUPLICATE_REQUEST answers given (a repeated reference, or one still in progress)
        self.duplicates_refused = 0
        self.reset()

    def begin_request(self, key: tuple[str, ...]) -> bool:
        """Strict mode: mark an idempotent request in progress; False if the same one already is."""
        if not self.config.strict:
            return True
        with self.lock:
            if key in self.in_progress:
                return False
            self.in_progress.add(key)
            return True

    def end_request(self, key: tuple[str, ...]) -> None:
        with self.lock:
            self.in_progress.discard(key)

    def reset(self) -> None:
        with self.lock:
            self.in_progress: set[tuple[str, ...]] = set()
            self.orders: dict[str, dict[str, Any]] = {}
            self.by_reference: dict[str, str] = {}
            self.payments: dict[str, PaymentState] = {}
            self.payment_refs: dict[tuple[str, str], str] = {}
            self.payment_errors: dict[tuple[str, str], GatewayError] = {}
            self.capture_refs: dict[str, str] = {}
            self.refund_refs: dict[str, str] = {}
            self.tokens: dict[str, float] = {}
            #: the client credentials are refused until then (``refuse_credentials``)
            self.credentials_refused_until: float | None = None
            self.ledger: list[dict[str, Any]] = []
            self._index()

    def _index(self) -> None:
        """What the time-driven changes and refunds look up, derived from the durable state: a
        call's cost follows what is open, never how many orders the sandbox has seen."""
        #: payments that may still be PENDING (dropped once they are not)
        self.open_payments: dict[str, PaymentState] = dict(self.payments)
        #: refunds still to settle, by refund order id
        self.settling: dict[str, dict[str, Any]] = {
            i: o for i, o in self.orders.items() if o.get("_settle_at") is not None}
        #: refund order ids by their parent order
        self.refunds_by_parent: dict[str, list[str]] = {}
        for i, o in self.orders.items():
            if o.get("parent_order_id"):
                self.refunds_by_parent.setdefault(o["parent_order_id"], []).append(i)

    #: what the sandbox remembers across restarts (like Plural, it does not forget an order)
    DURABLE = ("orders", "by_reference", "payments", "payment_refs", "payment_errors", "capture_refs", "refund_refs",
               "ledger")

    def snapshot(self) -> bytes:
        """The durable state, serialized (under the lock: a consistent moment)."""
        import pickle

        with self.lock:
            return pickle.dumps({name: getattr(self, name) for name in self.DURABLE}, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        import pickle

        state = pickle.loads(blob)  # noqa: S301 - our own file in DATA_DIR, written by snapshot()
        with self.lock:
            for name in self.DURABLE:
                if name in state:
                    setattr(self, name, state[name])
            self._index()

    # --- helpers ------------------------------------------------------------------------

    def now_iso(self) -> str:
        moment = dt.datetime.fromtimestamp(self.clock(), tz=dt.timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    def _new_order_id(self) -> str:
        stamp = dt.datetime.fromtimestamp(self.clock(), tz=dt.timezone.utc).strftime("%y%m%d%H%M%S")
        while True:
            candidate = f"v1-{stamp}-aa-{_rand(6)}"
            if candidate not in self.orders:
                return candidate

    def _record(self, kind: str, order: dict[str, Any], amount: int | None = None, **extra: Any) -> None:
        entry = {"seq": len(self.ledger) + 1, "at": self.now_iso(), "kind": kind, "order_id": order["order_id"],
                 "merchant_order_reference": order.get("merchant_order_reference")}
        if amount is not None:
            entry["amount"] = {"value": amount, "currency": order["order_amount"]["currency"]}
        entry.update(extra)
        self.ledger.append(entry)

    def _touch(self, order: dict[str, Any], status: str | None = None, *, event: bool = True) -> None:
        order["updated_at"] = self.now_iso()
        if status is not None and status != order["status"]:
            order["status"] = status
            if order.get("type") == "REFUND":
                event_type = {"PROCESSED": "REFUND_PROCESSED", "FAILED": "REFUND_FAILED"}.get(status)
            else:
                event_type = EVENT_FOR_STATUS.get(status)
            if event and event_type:
                self.emit(event_type, self._public(order))

    def _order(self, order_id: str) -> dict[str, Any]:
        order = self.orders.get(order_id)
        if order is None:
            raise GatewayError(404, "ORDER_NOT_FOUND", f"order {order_id} not found")
        return order

    def _payment(self, payment_id: Any) -> tuple[PaymentState, dict[str, Any], dict[str, Any]]:
        state = self.payments.get(str(payment_id)) if payment_id else None
        if state is None:
            raise GatewayError(404, "PAYMENT_NOT_FOUND", f"payment {payment_id} not found")
        order = self.orders[state.order_id]
        public = next(p for p in order["payments"] if p["id"] == state.payment_id)
        return state, order, public

    def _duplicate(self, name: str) -> None:
        """A reference already used: refused as Plural's error list says, unless ``replay``."""
        if self.config.duplicates != "replay":
            self.duplicates_refused += 1
            raise _refused(f"{name} was already used", "DUPLICATE_REQUEST", source=name, step="idempotency",
                           reason="DUPLICATE_REQUEST")

    @staticmethod
    def _reference(value: Any, name: str) -> str:
        if isinstance(value, bool) or value is None or value == "":
            raise _bad(f"{name} is required")
        if isinstance(value, int):
            value = str(value)
        if not isinstance(value, str):
            raise _bad(f"{name} must be a string")
        if value not in SEED_SAMPLE_REFERENCES and not REFERENCE.fullmatch(value):
            raise _bad(f"{name} allows 1-50 characters of A-Z a-z 0-9 - _", field=name)
        return value

    @staticmethod
    def _money(value: Any, name: str, *, currency: str | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _bad(f"{name} is required")
        amount, cur = value.get("value"), value.get("currency")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise _bad(f"{name}.value must be a positive integer in paise", field=f"{name}.value")
        if not isinstance(cur, str) or cur not in rules.CURRENCIES:
            raise _bad(f"{name}.currency must be a supported ISO 4217 code", field=f"{name}.currency")
        if currency is not None and cur != currency:
            raise _bad(f"{name}.currency must be {currency}", field=f"{name}.currency")
        return {"value": amount, "currency": cur}

    # --- auth ---------------------------------------------------------------------------

    def issue_token(self, body: dict[str, Any]) -> dict[str, Any]:
        """Plural's Generate Token: ``access_token`` and ``expires_at`` (ISO 8601, UTC; or
        ``expires_in`` seconds, as the seeds' samples, with ``token_expiry="in"``). Its
        reference lists 200, 405, 422 and 500: bad credentials, and a body it cannot use, are 422."""
        client_id, secret = body.get("client_id"), body.get("client_secret")
        if body.get("grant_type") != "client_credentials":
            raise _refused("grant_type must be client_credentials", source="grant_type")
        known = {self.config.client_id: self.config.client_secret, **SEED_SAMPLE_CLIENTS}
        if not client_id or known.get(str(client_id)) != secret:
            raise GatewayError(422, "UNAUTHORIZED", "invalid client credentials")
        with self.lock:
            if self.refusing_credentials(locked=True):
                raise GatewayError(422, "UNAUTHORIZED", "invalid client credentials")
            token = "sbx_" + secrets.token_urlsafe(32)
            expiry = self.clock() + self.config.token_ttl
            self.tokens[token] = expiry
        if self.config.token_expiry == "in":
            return {"access_token": token, "expires_in": int(self.config.token_ttl)}
        at = dt.datetime.fromtimestamp(expiry, tz=dt.timezone.utc)
        return {"access_token": token, "expires_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}

    def refuse_credentials(self, seconds: float | None) -> None:
        """A rotated secret, as Plural would see it: every issued token stops working and the
        client credentials are refused (422) for ``seconds`` (until ``accept_credentials`` when
        None). Tests and chaos use it."""
        with self.lock:
            self.tokens.clear()
            self.credentials_refused_until = float("inf") if seconds is None else self.clock() + seconds

    def accept_credentials(self) -> None:
        with self.lock:
            self.credentials_refused_until = None

    def refusing_credentials(self, *, locked: bool = False) -> bool:
        if not locked:
            with self.lock:
                return self.refusing_credentials(locked=True)
        until = self.credentials_refused_until
        if until is not None and self.clock() >= until:
            self.credentials_refused_until = until = None
        return until is not None

    def check_token(self, authorization: str | None, *, required: bool = True) -> None:
        if not authorization:
            if required:
                raise GatewayError(401, "UNAUTHORIZED", "missing bearer token")
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GatewayError(401, "UNAUTHORIZED", "malformed Authorization header")
        if token == SEED_SAMPLE_TOKEN:
            return
        expiry = self.tokens.get(token)
        if expiry is None or expiry <= self.clock():
            raise GatewayError(401, "UNAUTHORIZED", "token is invalid or expired")

    def advance_clock(self, seconds: float) -> float:
        """Move the sandbox's time forward (payment expiry, refund settlement, token expiry)."""
        with self.lock:
            self.offset += max(seconds, 0.0)
            self._settle_due_refunds()
            self._expire_due_payments()
            return self.offset

    def reset_clock(self) -> None:
        with self.lock:
            self.offset = 0.0

    def expire_tokens(self) -> None:
        """Make every issued token stale (tests of the client's 401 handling)."""
        with self.lock:
            self.tokens.clear()

    # --- orders -------------------------------------------------------------------------

    def create_order(self, body: dict[str, Any]) -> dict[str, Any]:
        reference = self._reference(body.get("merchant_order_reference"), "merchant_order_reference")
        amount = self._money(body.get("order_amount"), "order_amount")
        if amount["value"] > self.config.max_order_amount:
            raise _refused(f"order_amount exceeds the maximum of {self.config.max_order_amount}",
                           "AMOUNT_LIMIT_EXCEEDED", field="order_amount.value")
        pre_auth = body.get("pre_auth", False)
        if not isinstance(pre_auth, bool):
            raise _bad("pre_auth must be true or false")
        for url_field in ("callback_url", "failure_callback_url"):
            if body.get(url_field) is not None and not isinstance(body[url_field], str):
                raise _bad(f"{url_field} must be a string")
        with self.lock:
            existing = self.by_reference.get(reference)
            if existing is not None:
                self._duplicate("merchant_order_reference")
                return {"data": copy.deepcopy(self.orders[existing])}
            now = self.now_iso()
            order: dict[str, Any] = {
                "order_id": self._new_order_id(),
                "merchant_order_reference": reference,
                "type": "CHARGE",
                "status": "CREATED",
                "merchant_id": self.config.merchant_id,
                "order_amount": amount,
                "pre_auth": pre_auth,
            }
            for key in ("notes", "callback_url", "failure_callback_url", "purchase_details",
                        "cart_coupon_discount_amount", "allowed_payment_methods"):
                if key in body:
                    order[key] = copy.deepcopy(body[key])
            order.update({"payments": [], "created_at": now, "updated_at": now, "integration_mode": "SEAMLESS",
                          "payment_retries_remaining": self.config.payment_retries})
            self.orders[order["order_id"]] = order
            self.by_reference[reference] = order["order_id"]
            self._record("ORDER_CREATED", order, amount["value"])
            return {"data": copy.deepcopy(order)}

    def get_order(self, order_id: str) -> dict[str, Any]:
        with self.lock:
            self._settle_due_refunds()
            self._expire_due_payments()
            return {"data": self._public(self._order(order_id))}

    def get_order_by_reference(self, reference: str) -> dict[str, Any]:
        with self.lock:
            # any order: a checkout's, or a refund's (one namespace of references, as at Plural)
            order_id = self.by_reference.get(reference) or self.refund_refs.get(reference)
            if order_id is None:
                raise GatewayError(404, "ORDER_NOT_FOUND", f"no order with merchant_order_reference {reference}")
            return self.get_order(order_id)

    # --- payments -----------------------------------------------------------------------

    def _validate_card(self, details: Any, method: str) -> cards.CardProfile:
        if not isinstance(details, dict):
            raise _bad("payment_option.card_details is required")
        number = details.get("card_number")
        if not isinstance(number, str) or not rules.well_formed(number):
            raise _bad("card_number must be 12 to 19 digits", field="card_number")
        if not (rules.passes_luhn(number) or cards.is_seed_sample(number)):
            raise _bad("card_number fails the Luhn check", field="card_number")
        needs_full = method != "DEBIT_EMI"
        cvv, month, year = details.get("cvv"), details.get("expiry_month"), details.get("expiry_year")
        if cvv is not None or needs_full:
            if not isinstance(cvv, str) or not re.fullmatch(r"\d{3,4}", cvv):
                raise _bad("cvv must be 3 or 4 digits", field="cvv")
        if month is not None or year is not None or needs_full:
            if not (isinstance(month, str) and re.fullmatch(r"\d{1,2}", month)
                    and isinstance(year, str) and re.fullmatch(r"\d{2}|\d{4}", year)):
                raise _bad("expiry_month (MM) and expiry_year (YY or YYYY) are required", field="expiry")
            if not 1 <= int(month) <= 12:
                raise _bad("expiry_month must be 01 to 12", field="expiry_month")
            today = dt.datetime.fromtimestamp(self.clock(), tz=dt.timezone.utc).date()
            if rules.expired(month, year, today):
                raise _refused("card has expired", "CARD_EXPIRED")
        return cards.profile(number)

    @staticmethod
    def _device_info(info: Any) -> dict[str, str] | None:
        """``device_info`` as the create-payment sample sends it: an object of strings (the browser's
        headers, screen, time zone, ``device_channel``). Not echoed in the answer (the sample's
        response has none); the ledger keeps it with the payment."""
        if info is None:
            return None
        if not isinstance(info, dict) or not info:
            raise _bad("device_info must be an object", field="device_info")
        for key, value in info.items():
            if not isinstance(value, str) or not value or len(value) > 2048:
                raise _bad(f"device_info.{key} must be a non-empty string", field=f"device_info.{key}")
        return dict(info)

    def create_payment(self, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("payments")
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
            raise _bad("payments must hold exactly one payment")
        item = items[0]
        reference = self._reference(item.get("merchant_payment_reference"), "merchant_payment_reference")
        method = item.get("payment_method")
        if method not in PAYMENT_METHODS:
            raise _bad(f"payment_method must be one of {sorted(PAYMENT_METHODS)}", field="payment_method")
        with self.lock:
            order = self._order(order_id)
            key = (order_id, reference)
            if key in self.payment_refs:
                self._duplicate("merchant_payment_reference")
                if key in self.payment_errors:
                    raise self.payment_errors[key]
                return {"data": copy.deepcopy(order)}
            if order["status"] not in ("CREATED", "ATTEMPTED"):
                raise _refused(f"order is {order['status']}: no new payment can be made")
            if order.get("payment_retries_remaining", 1) <= 0:
                raise _refused("no payment retries remain for this order")
            amount = self._money(item.get("payment_amount"), "payment_amount",
                                 currency=order["order_amount"]["currency"])
            if method == "CARD" and amount["value"] != order["order_amount"]["value"]:
                raise _bad("payment_amount must equal the order amount", field="payment_amount")
            if amount["value"] > order["order_amount"]["value"]:
                raise _bad("payment_amount exceeds the order amount", field="payment_amount")
            card = self._validate_card((item.get("payment_option") or {}).get("card_details"), method)
            device = self._device_info(item.get("device_info"))
            if method == "DEBIT_EMI":
                mobile = ((item.get("payment_option") or {}).get("card_details") or {}).get("registered_mobile_number")
                if not isinstance(mobile, str) or not MOBILE.fullmatch(mobile):
                    raise _bad("registered_mobile_number must be the 10-digit mobile number registered with the "
                               "bank", field="registered_mobile_number")
            if method != "CARD":
                if not isinstance(item.get("offer_data"), dict):
                    raise _bad("offer_data is required for EMI payments", field="offer_data")
                terms = {"order_amount": order["order_amount"], "offer_data": item["offer_data"],
                         "payment_amount": amount, "payment_option": item.get("payment_option")}
                if order.get("cart_coupon_discount_amount") is not None:
                    terms["cart_coupon_discount_amount"] = order["cart_coupon_discount_amount"]
                self._check_offer(terms, method)
            attempt_letter = "abcdefghijklmnopqrstuvwxyz"[len(order["payments"]) % 26]
            payment_id = f"{order_id}-{PAYMENT_METHODS[method]}-{attempt_letter}"
            now = self.now_iso()
            public: dict[str, Any] = {
                "id": payment_id,
                "merchant_payment_reference": reference,
                "status": "PENDING",
                "payment_amount": amount,
                "payment_method": method,
                "payment_option": {"card_data": card.card_data()},
                "acquirer_data": {"approval_code": "", "acquirer_reference": "", "rrn": "", "is_aggregator": True},
                "created_at": now,
                "updated_at": now,
            }
            if method != "CARD":
                public["offer_data"] = copy.deepcopy(item["offer_data"])
            state = PaymentState(payment_id, order_id, card, method, created_at=self.clock())
            order["payments"].append(public)
            self.payments[payment_id] = state
            self.open_payments[payment_id] = state
            self.payment_refs[key] = payment_id
            self._record("PAYMENT_CREATED", order, amount["value"], payment_id=payment_id,
                         merchant_payment_reference=reference, **({"device_info": device} if device else {}))
            if card.behaviour == cards.DECLINED:
                error = _refused("payment declined by the issuer", "PAYMENT_DECLINED")
                self._fail_payment(state, order, public, error.code, error.message)
                self.payment_errors[key] = error
                raise error
            order["challenge_url"] = self.challenge_url(state)
            self._touch(order, "PENDING")
            return {"data": copy.deepcopy(order)}

    def challenge_url(self, state: PaymentState) -> str:
        return f"{self.config.public_url.rstrip('/')}/sandbox/acs/{state.payment_id}?token={state.acs_token}"

    def _fail_payment(self, state: PaymentState, order: dict[str, Any], public: dict[str, Any], code: str,
                      message: str, *, final: bool = False) -> None:
        """``final``: the order cannot be paid any more (exhausted OTP attempts end it FAILED, as
        Plural's order life cycle does); otherwise ATTEMPTED while payment retries remain."""
        public["status"] = "FAILED"
        public["error_detail"] = {"code": code, "message": message}
        public["updated_at"] = self.now_iso()
        order["payment_retries_remaining"] = (0 if final else
                                              max(order.get("payment_retries_remaining", 1) - 1, 0))
        self._record("PAYMENT_FAILED", order, public["payment_amount"]["value"], payment_id=state.payment_id,
                     code=code)
        self._touch(order, "ATTEMPTED" if order["payment_retries_remaining"] > 0 else "FAILED")

    def _authorize(self, state: PaymentState, order: dict[str, Any], public: dict[str, Any]) -> None:
        amount = public["payment_amount"]["value"]
        approval = f"{secrets.randbelow(10**6):06d}"
        public["acquirer_data"] = {"approval_code": approval,
                                   "acquirer_reference": f"{secrets.randbelow(10**15):015d}",
                                   "rrn": f"{secrets.randbelow(10**12):012d}", "is_aggregator": True}
        public["updated_at"] = self.now_iso()
        self._record("AUTHORIZED", order, amount, payment_id=state.payment_id)
        if order.get("pre_auth"):
            public["status"] = "AUTHORIZED"
            self._touch(order, "AUTHORIZED")
        else:
            public["status"] = "PROCESSED"
            public["capture_data"] = [{"merchant_capture_reference": f"auto-{state.payment_id}",
                                       "capture_amount": dict(public["payment_amount"]),
                                       "created_at": self.now_iso()}]
            self._record("CAPTURED", order, amount, payment_id=state.payment_id, automatic=True)
            self._touch(order, "PROCESSED")

    def card_details(self, body: dict[str, Any]) -> dict[str, Any]:
        items = body.get("card_details")
        if not isinstance(items, list) or not items:
            raise _bad("card_details must list at least one card")
        out = []
        for item in items:
            number = item.get("payment_identifier") if isinstance(item, dict) else None
            if not isinstance(number, str) or not rules.well_formed(number):
                raise _bad("payment_identifier must be a card number", field="payment_identifier")
            if not (rules.passes_luhn(number) or cards.is_seed_sample(number)):
                raise _bad("payment_identifier fails the Luhn check", field="payment_identifier")
            prof = cards.profile(number)
            out.append({
                "card_network": prof.network,
                "card_issuer": prof.issuer,
                "card_type": prof.card_type,
                "card_category": "NONE",
                "is_international_card": False,
                "is_native_otp_supported": prof.native_otp,
                "country_code": "IND",
                "currency": "INR",
                "is_currency_supported": True,
            })
        return {"card_payment_details": out}

    # --- native OTP ---------------------------------------------------------------------

    def _otp_payment(self, body: dict[str, Any]) -> tuple[PaymentState, dict[str, Any], dict[str, Any]]:
        self._expire_due_payments()  # every path that could authorize checks the expiry first
        state, order, public = self._payment(body.get("payment_id"))
        if public["status"] == "FAILED" and (public.get("error_detail") or {}).get("code") == "PAYMENT_EXPIRED":
            raise _refused("the payment has expired", "PAYMENT_EXPIRED", source="payment", step="OTP",
                           reason="PAYMENT_EXPIRED")
        if public["status"] != "PENDING":
            raise _refused(f"payment is {public['status']}", "INVALID_REQUEST")
        return state, order, public

    def _otp_answer(self, state: PaymentState, *, status: bool) -> dict[str, Any]:
        nxt = ["SUBMIT_OTP"] + (["RESEND_OTP"] if state.resends < self.config.otp_resend_limit else [])
        out: dict[str, Any] = {"next": nxt, "meta_data": {"resend_after": str(self.config.otp_resend_after)}}
        return {"status": "SUCCESS", **out} if status else out

    def generate_otp(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            state, order, public = self._otp_payment(body)
            card = state.card
            if (card is None or not card.native_otp or card.behaviour == cards.OTP_REFUSED
                    or state.method == "DEBIT_EMI"):  # Debit EMI has no native OTP in Plural's document
                raise _refused("card is not eligible for native OTP; use the challenge_url", "CARD_NOT_ELIGIBLE")
            if state.otp_sent_at is not None and self.config.second_generate_otp != "resend":
                raise _refused("an OTP was already generated for this payment; use Resend OTP",
                               "OTP_ALREADY_GENERATED", source="otp", step="GENERATE_OTP",
                               reason="OTP_ALREADY_GENERATED")
            state.otp_sent_at = self.clock()  # ``resend``: a fresh OTP, its resend timer restarted
            return self._otp_answer(state, status=False)

    def submit_otp(self, body: dict[str, Any]) -> dict[str, Any]:
        otp = body.get("otp")
        if isinstance(otp, bool) or not isinstance(otp, (str, int)) or not re.fullmatch(r"\d{4,8}", str(otp)):
            raise _bad("otp must be 4 to 8 digits", field="otp")
        with self.lock:
            state, order, public = self._otp_payment(body)
            if state.otp_sent_at is None:
                raise _refused("no OTP was generated for this payment", "OTP_NOT_GENERATED")
            if str(otp) == self.config.correct_otp:
                self._authorize(state, order, public)
                return {"status": "SUCCESS"}
            state.otp_attempts += 1
            left = self.config.otp_max_attempts - state.otp_attempts
            if left <= 0:
                self._fail_payment(state, order, public, "USER_AUTHENTICATION_FAILED", "OTP attempts exhausted",
                                   final=True)
                raise _refused("incorrect OTP; no attempts left, the payment has failed", "OTP_ATTEMPTS_EXHAUSTED",
                               source="otp", step="SUBMIT_OTP", reason="OTP_ATTEMPTS_EXHAUSTED")
            raise _refused("incorrect OTP", "INVALID_OTP", source="otp", step="SUBMIT_OTP", reason="INCORRECT_OTP")

    def resend_otp(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            state, order, public = self._otp_payment(body)
            if state.otp_sent_at is None:
                raise _refused("no OTP was generated for this payment", "OTP_NOT_GENERATED")
            wait = state.otp_sent_at + self.config.otp_resend_after - self.clock()
            if wait > 0:
                raise _refused(f"OTP can be resent after {int(wait) + 1} seconds", "OTP_RESEND_NOT_ALLOWED",
                               source="otp", step="RESEND_OTP", reason="RESEND_TOO_EARLY")
            if state.resends >= self.config.otp_resend_limit:
                raise _refused("OTP resend limit reached", "OTP_RESEND_LIMIT_REACHED")
            state.resends += 1
            state.otp_sent_at = self.clock()
            return self._otp_answer(state, status=True)

    # --- ACS page -----------------------------------------------------------------------

    def acs_view(self, payment_id: str, token: str) -> tuple[PaymentState, dict[str, Any], dict[str, Any]]:
        with self.lock:
            state, order, public = self._payment(payment_id)
            if not secrets.compare_digest(state.acs_token, token or ""):
                raise GatewayError(403, "UNAUTHORIZED", "invalid challenge token")
            return state, copy.deepcopy(order), copy.deepcopy(public)

    def acs_decide(self, payment_id: str, token: str, approve: bool) -> str:
        """Approve or decline on the ACS page; returns the URL the browser goes to next."""
        with self.lock:
            self._expire_due_payments()  # a bank page left open past the expiry cannot authorize
            state, order, public = self._payment(payment_id)
            if not secrets.compare_digest(state.acs_token, token or ""):
                raise GatewayError(403, "UNAUTHORIZED", "invalid challenge token")
            if public["status"] == "PENDING":
                if approve:
                    self._authorize(state, order, public)
                else:
                    self._fail_payment(state, order, public, "USER_AUTHENTICATION_FAILED",
                                       "Consumer Authentication required")
            if public["status"] == "FAILED":
                fields = {"order_id": order["order_id"], "status": "FAILED",
                          "error_code": public["error_detail"]["code"],
                          "error_message": public["error_detail"]["message"]}
                target = order.get("failure_callback_url") or order.get("callback_url")
            else:
                fields = {"order_id": order["order_id"], "status": order["status"]}
                target = order.get("callback_url")
            if state.method != "CARD":
                # the Debit EMI document returns (and signs) ``payment_status``; the card one ``status``
                fields["payment_status"] = fields.pop("status")
            fields["signature"] = callback_signature(fields, self.config.callback_key)
            if not target:
                return ""
            return f"{target}{'&' if '?' in target else '?'}{urlencode(fields)}"

    # --- capture, cancel, refund --------------------------------------------------------

    def capture(self, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
        reference = self._reference(body.get("merchant_capture_reference"), "merchant_capture_reference")
        with self.lock:
            order = self._order(order_id)
            if reference in self.capture_refs:
                if self.capture_refs[reference] != order_id:
                    self.duplicates_refused += 1
                    raise GatewayError(409, "DUPLICATE_REQUEST", "merchant_capture_reference used on another order")
                self._duplicate("merchant_capture_reference")
                return {"data": copy.deepcopy(order)}
            if order["status"] != "AUTHORIZED":
                raise _refused(f"order is {order['status']}: only AUTHORIZED orders can be captured")
            public = next(p for p in reversed(order["payments"]) if p["status"] == "AUTHORIZED")
            authorized = public["payment_amount"]["value"]
            if body.get("capture_amount") is None:
                amount = dict(public["payment_amount"])
            else:
                amount = self._money(body["capture_amount"], "capture_amount",
                                     currency=order["order_amount"]["currency"])
            if amount["value"] > authorized:
                raise _bad(f"capture_amount exceeds the authorized amount of {authorized}", field="capture_amount")
            public["status"] = "PROCESSED"
            public.setdefault("capture_data", []).append(
                {"merchant_capture_reference": reference, "capture_amount": amount, "created_at": self.now_iso()})
            public["updated_at"] = self.now_iso()
            self.capture_refs[reference] = order_id
            self._record("CAPTURED", order, amount["value"], payment_id=public["id"],
                         merchant_capture_reference=reference)
            if amount["value"] < authorized:
                self._record("RELEASED", order, authorized - amount["value"], payment_id=public["id"])
            self._touch(order, "PROCESSED" if amount["value"] == authorized else "PARTIALLY_CAPTURED")
            return {"data": copy.deepcopy(order)}

    def cancel(self, order_id: str) -> dict[str, Any]:
        with self.lock:
            order = self._order(order_id)
            if order["status"] == "CANCELLED":
                return {"data": copy.deepcopy(order)}
            if self.config.strict and order["status"] != "AUTHORIZED":
                raise _refused(f"order is {order['status']}: only an AUTHORIZED (pre-auth) order can be cancelled")
            if order["status"] not in ("CREATED", "PENDING", "ATTEMPTED", "AUTHORIZED"):
                raise _refused(f"order is {order['status']} and cannot be cancelled")
            released = 0
            for public in order["payments"]:
                if public["status"] in ("PENDING", "AUTHORIZED"):
                    if public["status"] == "AUTHORIZED":
                        released += public["payment_amount"]["value"]
                    public["status"] = "CANCELLED"
                    public["updated_at"] = self.now_iso()
            self._record("CANCELLED", order, released or None)
            self._touch(order, "CANCELLED")
            return {"data": copy.deepcopy(order)}

    def refund(self, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
        reference = self._reference(body.get("merchant_order_reference"), "merchant_order_reference")
        with self.lock:
            parent = self._order(order_id)
            # a repeated refund reference is refused (``replay``: the first refund, if it is of this
            # order): a caller that lost the answer finds its refund by reference (Get Order by reference)
            first = self.refund_refs.get(reference)
            if (self.config.duplicates == "replay" and first is not None and first in self.orders
                    and self.orders[first].get("parent_order_id") == order_id):
                return {"data": self._public(self.orders[first])}
            if reference in self.refund_refs or reference in self.by_reference:
                self.duplicates_refused += 1
                raise _refused("merchant_order_reference already used by an order", "DUPLICATE_REQUEST",
                               field="merchant_order_reference")
            if parent.get("type") != "CHARGE" or parent["status"] not in (
                    "PROCESSED", "PARTIALLY_CAPTURED", "PARTIALLY_REFUNDED"):
                raise _refused(f"order is {parent['status']}: only processed orders can be refunded")
            refundable = self._captured(parent) - self._refunded(order_id)
            currency = parent["order_amount"]["currency"]
            if body.get("order_amount") is None:
                amount = {"value": refundable, "currency": currency}
            else:
                amount = self._money(body["order_amount"], "order_amount", currency=currency)
            if amount["value"] <= 0 or amount["value"] > refundable:
                raise _bad(f"refund amount exceeds the refundable {refundable}", field="order_amount")
            now = self.now_iso()
            refund = {
                "order_id": self._new_order_id(),
                "parent_order_id": order_id,
                "merchant_order_reference": reference,
                "type": "REFUND",
                "status": "PENDING",
                "merchant_id": self.config.merchant_id,
                "order_amount": amount,
                "merchant_metadata": body.get("merchant_metadata") or {},
                "payments": [],
                "created_at": now,
                "updated_at": now,
                "_settle_at": self.clock() + self.config.refund_settle_seconds,
            }
            self.orders[refund["order_id"]] = refund
            self.settling[refund["order_id"]] = refund
            self.refunds_by_parent.setdefault(order_id, []).append(refund["order_id"])
            self.refund_refs[reference] = refund["order_id"]
            self._record("REFUND_CREATED", parent, amount["value"], refund_order_id=refund["order_id"],
                         merchant_refund_reference=reference)
            if self.config.refund_settle_seconds <= 0:
                self._settle_refund(refund)
            else:
                timer = threading.Timer(self.config.refund_settle_seconds + 0.01, self.tick)
                timer.daemon = True
                timer.start()
            return {"data": self._public(refund)}

    @staticmethod
    def _public(order: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in order.items() if not k.startswith("_")}

    def _captured(self, order: dict[str, Any]) -> int:
        return sum(c["capture_amount"]["value"] for p in order["payments"] for c in p.get("capture_data") or [])

    def _refunded(self, parent_id: str) -> int:
        refunds = (self.orders[i] for i in self.refunds_by_parent.get(parent_id, ()))
        return sum(o["order_amount"]["value"] for o in refunds if o["status"] in ("PENDING", "PROCESSED", "CREATED"))

    def _settle_refund(self, refund: dict[str, Any]) -> None:
        parent = self.orders[refund["parent_order_id"]]
        refund.pop("_settle_at", None)
        self.settling.pop(refund["order_id"], None)
        if self.config.fail_refunds:
            self._record("REFUND_FAILED", parent, refund["order_amount"]["value"], refund_order_id=refund["order_id"])
            self._touch(refund, "FAILED")
            return
        self._record("REFUNDED", parent, refund["order_amount"]["value"], refund_order_id=refund["order_id"])
        self._touch(refund, "PROCESSED")
        full = self._refunded(parent["order_id"]) >= self._captured(parent)
        self._touch(parent, "FULLY_REFUNDED" if full else "PARTIALLY_REFUNDED", event=False)

    def _settle_due_refunds(self) -> None:
        now = self.clock()
        for order in list(self.settling.values()):
            if order["_settle_at"] <= now:
                self._settle_refund(order)

    def _expire_due_payments(self) -> None:
        """A payment the customer does not complete in time expires (PAYMENT_EXPIRED), as Plural's does:
        an unpaid order cannot be cancelled, so this is how it ends (pre-auth or not)."""
        limit = self.config.payment_expiry_seconds
        if limit <= 0:
            return
        now = self.clock()
        for state in list(self.open_payments.values()):
            order = self.orders[state.order_id]
            public = next(p for p in order["payments"] if p["id"] == state.payment_id)
            if public["status"] == "PENDING" and now - state.created_at >= limit:
                self._fail_payment(state, order, public, "PAYMENT_EXPIRED", "the payment was not completed in time")
            if public["status"] != "PENDING":
                del self.open_payments[state.payment_id]

    def tick(self) -> None:
        """Let time-driven changes happen (refund settlement, payment expiry)."""
        with self.lock:
            self._settle_due_refunds()
            self._expire_due_payments()

    # --- affordability ------------------------------------------------------------------

    def _offers(self) -> tuple[offers.IssuerOffer, ...]:
        return self.config.offers.issuers

    def discover_offers(self, body: dict[str, Any]) -> dict[str, Any]:
        self._money(body.get("order_amount"), "order_amount")
        try:
            return offers.discover(body, self._offers())
        except offers.BadRequest as exc:
            raise _bad(str(exc), field=exc.field) from None

    def validate_offer(self, body: dict[str, Any]) -> dict[str, Any]:
        amount = self._money(body.get("order_amount"), "order_amount")
        self._money(body.get("payment_amount"), "payment_amount", currency=amount["currency"])
        if body.get("payment_method") not in ("DEBIT_EMI", "CREDIT_EMI"):
            raise _bad("payment_method must be DEBIT_EMI or CREDIT_EMI", field="payment_method")
        if not isinstance(body.get("offer_data"), dict):
            raise _bad("offer_data is required", field="offer_data")
        self._check_offer(body)
        return {"code": "ELIGIBLE", "message": "Offer is Eligible"}

    def _check_offer(self, request: dict[str, Any], method: str | None = None) -> None:
        try:
            offers.validate(request, payment_method=method, offers=self._offers())
        except offers.BadRequest as exc:
            raise _bad(str(exc), field=exc.field) from None
        except offers.NotEligible as exc:
            raise _refused(str(exc), exc.code) from None

    # --- inspection ---------------------------------------------------------------------

    def ledger_view(self, order_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The ledger, or the entries of ``order_ids`` only."""
        with self.lock:
            if order_ids is None:
                return copy.deepcopy(self.ledger)
            wanted = set(order_ids)
            return copy.deepcopy([e for e in self.ledger if e["order_id"] in wanted])

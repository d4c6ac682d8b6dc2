"""The sandbox gateway's state: its configuration, error type, the clock, and the ``Ledger`` every
resource (orders, payments, OTP, the bank page, refunds, tokens, offers) works on."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from devkit.sandbox import cards, offers, rules


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


class _Unpickler(pickle.Unpickler):
    """Reads a state file written before the sandbox moved (``orchestrator.sandbox`` to
    ``devkit.sandbox``, ``gateway.PaymentState`` to ``state``): a developer's DATA_DIR keeps its orders."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("orchestrator.sandbox"):
            module = "devkit.sandbox" + module.removeprefix("orchestrator.sandbox")
        if module == "devkit.sandbox.gateway" and name == "PaymentState":
            module = "devkit.sandbox.state"
        return super().find_class(module, name)


def _rand(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))



class Ledger:
    """The sandbox's state and what every resource shares: its orders, payments, tokens and ledger,
    the lock, the clock, the bookkeeping helpers. Each resource adds its calls (``Gateway``)."""

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
        with self.lock:
            return pickle.dumps({name: getattr(self, name) for name in self.DURABLE}, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        import io

        state = _Unpickler(io.BytesIO(blob)).load()  # noqa: S301 - our own file in DATA_DIR, from snapshot()
        with self.lock:
            for name in self.DURABLE:
                if name in state:
                    setattr(self, name, state[name])
            self._index()

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

    @staticmethod
    def _public(order: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in order.items() if not k.startswith("_")}

    def _captured(self, order: dict[str, Any]) -> int:
        return sum(c["capture_amount"]["value"] for p in order["payments"] for c in p.get("capture_data") or [])

    def _refunded(self, parent_id: str) -> int:
        refunds = (self.orders[i] for i in self.refunds_by_parent.get(parent_id, ()))
        return sum(o["order_amount"]["value"] for o in refunds if o["status"] in ("PENDING", "PROCESSED", "CREATED"))

    def tick(self) -> None:
        """Let time-driven changes happen (refund settlement, payment expiry)."""
        with self.lock:
            self._settle_due_refunds()
            self._expire_due_payments()

    def ledger_view(self, order_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The ledger, or the entries of ``order_ids`` only."""
        with self.lock:
            if order_ids is None:
                return copy.deepcopy(self.ledger)
            wanted = set(order_ids)
            return copy.deepcopy([e for e in self.ledger if e["order_id"] in wanted])

"""The sandbox gateway's payments: card checks, create, the card details look-up, authorization, failure, expiry."""

from __future__ import annotations

import copy
import datetime as dt
import re
import secrets
from typing import Any

from devkit.sandbox import cards, rules
from devkit.sandbox.state import Ledger, MOBILE, PAYMENT_METHODS, PaymentState, _bad, _refused


class Payments(Ledger):
    """Payments: card checks, create, the card details look-up, authorization, failure, expiry."""

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

"""The sandbox gateway's OTP: native OTP: generate, submit, resend."""

from __future__ import annotations

import re
from typing import Any

from devkit.sandbox import cards
from devkit.sandbox.state import Ledger, PaymentState, _bad, _refused


class Otp(Ledger):
    """Native OTP: generate, submit, resend."""

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

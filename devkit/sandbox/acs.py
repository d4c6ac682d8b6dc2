"""The sandbox gateway's bank page: the bank's page (3-D Secure's ACS): what it shows, and the customer's decision."""

from __future__ import annotations

import copy
import secrets
from typing import Any
from urllib.parse import urlencode

from devkit.sandbox.signing import callback_signature
from devkit.sandbox.state import GatewayError, Ledger, PaymentState


class Acs(Ledger):
    """The bank's page (3-D Secure's ACS): what it shows, and the customer's decision."""

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

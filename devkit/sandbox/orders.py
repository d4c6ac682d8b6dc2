"""The sandbox gateway's orders: create, get (by id, by reference), capture, cancel."""

from __future__ import annotations

import copy
from typing import Any

from devkit.sandbox.state import GatewayError, Ledger, _bad, _refused


class Orders(Ledger):
    """Orders: create, get (by id, by reference), capture, cancel."""

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

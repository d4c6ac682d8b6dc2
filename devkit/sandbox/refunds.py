"""The sandbox gateway's refunds: a refund order per request, settled (PROCESSED or FAILED) when due."""

from __future__ import annotations

import threading
from typing import Any

from devkit.sandbox.state import Ledger, _bad, _refused


class Refunds(Ledger):
    """Refunds: a refund order per request, settled (PROCESSED or FAILED) when due."""

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

"""The sandbox gateway's affordability: EMI offers: discovery and validation against the offer book (``offers``)."""

from __future__ import annotations

from typing import Any

from devkit.sandbox import offers
from devkit.sandbox.state import Ledger, _bad, _refused


class Affordability(Ledger):
    """EMI offers: discovery and validation against the offer book (``offers``)."""

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

"""A checkout's refunds: request one, list them."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from orchestrator.entrypoints.api.errors import MERCHANT_ERRORS
from orchestrator.entrypoints.api.guard import NEEDS_API_KEY
from orchestrator.merchant.errors import MerchantError
from orchestrator.merchant.schemas import RefundIn
from orchestrator.merchant.service import CheckoutService
from orchestrator.outbound.views import refund_view

def add(app: FastAPI, service_factory: Callable[[], CheckoutService]) -> None:
    @app.post("/v1/checkouts/{checkout_id}/refunds", status_code=202, openapi_extra=NEEDS_API_KEY, responses={
        200: {"description": "this merchant_refund_reference already names this refund: it is returned"},
        **MERCHANT_ERRORS})
    def refund(checkout_id: str, body: RefundIn | None = None) -> JSONResponse:
        """Refund a COMPLETED checkout, in full (default) or in part; idempotent on the reference."""
        svc = service_factory()
        c = svc.get(checkout_id)
        amount = body.amount if body else None
        if amount is not None and amount.currency != c.currency:
            raise MerchantError(400, "INVALID_REQUEST", f"amount must be in {c.currency}")
        row, created = svc.refund(checkout_id, amount.value if amount else None,
                                  body.merchant_refund_reference if body else None)
        return JSONResponse(refund_view(row), status_code=202 if created else 200)

    @app.get("/v1/checkouts/{checkout_id}/refunds", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def refunds(checkout_id: str) -> dict[str, Any]:
        svc = service_factory()
        svc.get(checkout_id)
        return {"refunds": [refund_view(r) for r in svc.refunds(checkout_id)]}

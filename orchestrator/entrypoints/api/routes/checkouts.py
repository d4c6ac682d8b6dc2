"""The merchant's checkouts: create, list, read (a long poll too), OTP, cancel, delivery."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from orchestrator.domain.saga import PUBLIC_STATUS
from orchestrator.entrypoints.api.errors import MERCHANT_ERRORS
from orchestrator.entrypoints.api.guard import KEYED_STATE, NEEDS_API_KEY
from orchestrator.merchant.errors import MerchantError
from orchestrator.merchant.schemas import CheckoutIn, DeliveryIn, OTPIn
from orchestrator.merchant.service import CheckoutService
from orchestrator.outbound.changes import Listener

PUBLIC_STATUSES = frozenset(PUBLIC_STATUS.values())
ISO_TIME = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$"
#: the longest long poll (below common proxies' idle timeouts)
MAX_WAIT = 30.0

def add(app: FastAPI, service_factory: Callable[[], CheckoutService], listener: Listener) -> None:
    @app.post("/v1/checkouts", status_code=202, openapi_extra=NEEDS_API_KEY, responses={
        200: {"description": "this merchant_order_reference already names this checkout: it is returned"},
        **MERCHANT_ERRORS})
    def create_checkout(body: CheckoutIn, request: Request) -> Response:
        svc = service_factory()
        keyed = request.scope.get("state", {}).get(KEYED_STATE)
        row, created = svc.create(body, keyed)
        if keyed is not None and keyed.stored:  # the answer kept with the key: sent as it was stored
            status, stored = keyed.answer
            return Response(stored, status_code=status, media_type="application/json")
        return JSONResponse(svc.view(row), status_code=202 if created else 200)

    @app.get("/v1/checkouts", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def list_checkouts(status: str | None = Query(default=None, description="a public status"),
                       created_after: str | None = Query(default=None, pattern=ISO_TIME,
                                                         description="ISO 8601, e.g. 2026-11-22T10:00:00Z"),
                       cursor: str | None = Query(default=None, description="`next_cursor` of the previous page"),
                       limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:
        """Checkouts, newest first, a page at a time."""
        svc = service_factory()
        try:
            after = dt.datetime.fromisoformat(created_after) if created_after else None
            if after is not None:
                after = (after if after.tzinfo else after.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
        except (ValueError, OverflowError):
            raise MerchantError(400, "INVALID_REQUEST", "created_after is not a date and time") from None
        return svc.list_checkouts(status, after, cursor, limit)

    @app.get("/v1/checkouts/{checkout_id}", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    async def get_checkout(
            checkout_id: str,
            changed_from: str | None = Query(default=None, description=(
                "long poll: answer once the checkout's status is no longer this one (or after `wait`)")),
            wait: float = Query(default=0, ge=0, le=MAX_WAIT, description="seconds to wait for `changed_from`")) -> dict[str, Any]:
        """One checkout. With ``changed_from`` and ``wait``, a long poll: the answer comes the moment
        the status changes (or when ``wait`` runs out, unchanged), instead of polling."""
        svc = service_factory()
        if changed_from is not None and changed_from not in PUBLIC_STATUSES:
            raise MerchantError(400, "INVALID_REQUEST", f"changed_from must be one of {sorted(PUBLIC_STATUSES)}")
        if changed_from is None or wait <= 0:
            return await run_in_threadpool(svc.show, checkout_id)
        return await listener.wait_for_change(checkout_id, lambda: svc.show(checkout_id), lambda view: view["status"],
                                              lambda view: view["version"], changed_from, wait)

    @app.post("/v1/checkouts/{checkout_id}/otp", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def submit_otp(checkout_id: str, body: OTPIn) -> dict[str, Any]:
        svc = service_factory()
        return svc.answer_otp(checkout_id, body.otp)

    @app.post("/v1/checkouts/{checkout_id}/otp/resend", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def resend_otp(checkout_id: str) -> dict[str, Any]:
        svc = service_factory()
        return svc.view(svc.resend_otp(checkout_id))

    @app.post("/v1/checkouts/{checkout_id}/cancel", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def cancel(checkout_id: str) -> dict[str, Any]:
        svc = service_factory()
        return svc.view(svc.cancel(checkout_id))

    @app.post("/v1/checkouts/{checkout_id}/delivery", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def delivery(checkout_id: str, body: DeliveryIn | None = None) -> dict[str, Any]:
        """Delivered: capture a pre-auth checkout, in full or for ``capture_amount``."""
        svc = service_factory()
        c = svc.get(checkout_id)
        amount = body.capture_amount if body else None
        if amount is not None and amount.currency != c.currency:
            raise MerchantError(400, "INVALID_REQUEST", f"capture_amount must be in {c.currency}")
        return svc.view(svc.deliver(checkout_id, amount.value if amount else None))

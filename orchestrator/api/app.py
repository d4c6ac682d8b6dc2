"""The merchant API (FastAPI): checkouts, OTP actions, cancel. OpenAPI at /docs and /openapi.json.

Every ``/v1`` route needs the ``X-API-Key`` header. Errors are ``{code, message}`` with a 4xx
status; validation errors never echo the submitted values (a card number would be among them).
"""

from __future__ import annotations

import secrets
from typing import Any, Callable
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.inbound import Inbound
from orchestrator.refunds import RefundRefused, refund_view
from orchestrator.service import CheckoutError, CheckoutIn, CheckoutService, DeliveryIn, OTPIn, RefundIn
from orchestrator.webhooks import WebhookRejected


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc), "message": err.get("msg", "invalid")})
    return out


def create_app(service_factory: Callable[[], CheckoutService], api_key: str,
               inbound: Callable[[], Inbound] | None = None,
               readiness: Callable[[], dict[str, str]] | None = None) -> FastAPI:
    app = FastAPI(title="Plural payment orchestrator", version="1",
                  description="Checkouts driven through Plural (Pine Labs) to a final state.")

    @app.exception_handler(CheckoutError)
    async def checkout_error(_request: Request, exc: CheckoutError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        message = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return JSONResponse({"code": "INVALID_REQUEST", "message": message, "errors": errors}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "UNAUTHORIZED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "ERROR")
        return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code)

    def authenticated(x_api_key: str | None = Header(default=None)) -> None:
        if not x_api_key or not secrets.compare_digest(x_api_key.encode(), api_key.encode()):
            raise CheckoutError(401, "UNAUTHORIZED", "missing or wrong X-API-Key")

    def service() -> CheckoutService:
        return service_factory()

    guarded = [Depends(authenticated)]

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    def ready() -> JSONResponse:
        """Readiness: the database and Redis answer (503 naming what does not)."""
        checks = readiness() if readiness else {}
        failing = {name: result for name, result in checks.items() if result != "ok"}
        return JSONResponse({"status": "ok" if not failing else "unavailable", "checks": checks},
                            status_code=503 if failing else 200)

    @app.post("/v1/checkouts", status_code=202, dependencies=guarded)
    def create_checkout(body: CheckoutIn, svc: CheckoutService = Depends(service)) -> JSONResponse:
        row, created = svc.create(body)
        return JSONResponse(svc.view(row), status_code=202 if created else 200)

    @app.get("/v1/checkouts/{checkout_id}", dependencies=guarded)
    def get_checkout(checkout_id: str, svc: CheckoutService = Depends(service)) -> dict[str, Any]:
        return svc.view(svc.get(checkout_id))

    @app.post("/v1/checkouts/{checkout_id}/otp", status_code=202, dependencies=guarded)
    def submit_otp(checkout_id: str, body: OTPIn, svc: CheckoutService = Depends(service)) -> dict[str, Any]:
        return svc.view(svc.submit_otp(checkout_id, body.otp))

    @app.post("/v1/checkouts/{checkout_id}/otp/resend", status_code=202, dependencies=guarded)
    def resend_otp(checkout_id: str, svc: CheckoutService = Depends(service)) -> dict[str, Any]:
        return svc.view(svc.resend_otp(checkout_id))

    @app.post("/v1/checkouts/{checkout_id}/cancel", status_code=202, dependencies=guarded)
    def cancel(checkout_id: str, svc: CheckoutService = Depends(service)) -> dict[str, Any]:
        return svc.view(svc.cancel(checkout_id))

    @app.post("/v1/checkouts/{checkout_id}/delivery", status_code=202, dependencies=guarded)
    def delivery(checkout_id: str, body: DeliveryIn | None = None,
                 svc: CheckoutService = Depends(service)) -> dict[str, Any]:
        """Delivered: capture a pre-auth checkout, in full or for ``capture_amount``."""
        c = svc.get(checkout_id)
        amount = body.capture_amount if body else None
        if amount is not None and amount.currency != c.currency:
            raise CheckoutError(400, "INVALID_REQUEST", f"capture_amount must be in {c.currency}")
        return svc.view(svc.deliver(checkout_id, amount.value if amount else None))

    @app.post("/v1/checkouts/{checkout_id}/refunds", status_code=202, dependencies=guarded)
    def refund(checkout_id: str, body: RefundIn | None = None,
               svc: CheckoutService = Depends(service)) -> JSONResponse:
        """Refund a COMPLETED checkout, in full (default) or in part; idempotent on the reference."""
        c = svc.get(checkout_id)
        amount = body.amount if body else None
        if amount is not None and amount.currency != c.currency:
            raise CheckoutError(400, "INVALID_REQUEST", f"amount must be in {c.currency}")
        try:
            row, created = svc.refund(checkout_id, amount.value if amount else None,
                                      body.merchant_refund_reference if body else None)
        except RefundRefused as exc:
            raise CheckoutError(exc.status, exc.code, exc.message, **exc.details) from None
        return JSONResponse(refund_view(row), status_code=202 if created else 200)

    @app.get("/v1/checkouts/{checkout_id}/refunds", dependencies=guarded)
    def refunds(checkout_id: str, svc: CheckoutService = Depends(service)) -> dict[str, Any]:
        svc.get(checkout_id)
        return {"refunds": [refund_view(r) for r in svc.refunds(checkout_id)]}

    if inbound is not None:
        _inbound_routes(app, inbound)
    return app


def _inbound_routes(app: FastAPI, inbound: Callable[[], Inbound]) -> None:
    @app.post("/webhooks/plural", tags=["from Plural"])
    async def plural_webhook(request: Request) -> JSONResponse:
        """Standard Webhooks from Plural: verified, stored once per webhook-id, applied asynchronously."""
        body = await request.body()
        try:
            result = await run_in_threadpool(inbound().webhook, body, dict(request.headers))
        except WebhookRejected as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        return JSONResponse({"received": True, "duplicate": result.duplicate}, status_code=200)

    async def callback(fields: dict[str, str]) -> Response:
        answer = await run_in_threadpool(inbound().callback, fields)
        if answer.redirect:
            return RedirectResponse(answer.redirect, status_code=303)
        return HTMLResponse(answer.page or "", status_code=answer.status)

    @app.get("/callbacks/plural", tags=["from Plural"], response_class=HTMLResponse)
    async def plural_callback_get(request: Request) -> Response:
        """The customer's browser back from Plural (fields in the query)."""
        return await callback(dict(request.query_params))

    @app.post("/callbacks/plural", tags=["from Plural"], response_class=HTMLResponse)
    async def plural_callback_post(request: Request) -> Response:
        """The customer's browser back from Plural (fields posted as a form)."""
        form = parse_qs((await request.body()).decode(errors="replace"))
        return await callback({k: v[0] for k, v in form.items()})


def app_from_runtime() -> FastAPI:
    """The API wired to this process's settings, database, Redis and Celery."""
    from orchestrator.runtime import get_runtime

    rt = get_runtime()
    from orchestrator.inbound import inbound_from_runtime

    svc = CheckoutService(rt.settings, rt.repo, rt.vault, rt.enqueue)
    handler = inbound_from_runtime(rt)
    return create_app(lambda: svc, rt.settings.orchestrator_api_key.get_secret_value(), lambda: handler,
                      readiness=rt.readiness)

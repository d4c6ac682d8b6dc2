"""What every sandbox call shares over HTTP: Plural's error body, the JSON body, the reference a call
is idempotent on (a repeat in progress: 409), the admin key, and the faults a call may meet."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from typing import Any, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from devkit.sandbox.faults import Faults
from devkit.sandbox.gateway import Gateway, GatewayError

PLURAL_PREFIXES = ("/api/",)
ADMIN_PREFIXES = ("/sandbox/config", "/sandbox/offers", "/sandbox/faults", "/sandbox/reset", "/sandbox/clock", "/sandbox/tokens")


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise GatewayError(400, "INVALID_REQUEST", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "INVALID_REQUEST", "body must be a JSON object")
    return data


_ORDER_PATH = re.compile(r"^/api/pay/v1/orders/([^/]+)/(payments|capture|cancel)$")
_REFUND_PATH = re.compile(r"^/api/pay/v1/refunds/([^/]+)$")


async def _idempotency_key(request: Request) -> tuple[str, ...] | None:
    """The reference a Plural call is idempotent on (None for calls that have none)."""
    if request.method not in ("POST", "PUT"):
        return None
    path = request.url.path
    order_call = _ORDER_PATH.match(path)
    if path != "/api/pay/v1/orders" and not order_call and not _REFUND_PATH.match(path):
        return None
    if order_call and order_call.group(2) == "cancel":
        return ("cancel", order_call.group(1))
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if path == "/api/pay/v1/orders":
        reference = body.get("merchant_order_reference")
        return ("order", str(reference)) if reference else None
    if _REFUND_PATH.match(path):
        reference = body.get("merchant_order_reference")
        return ("refund", str(reference)) if reference else None
    assert order_call is not None
    if order_call.group(2) == "capture":
        reference = body.get("merchant_capture_reference")
        return ("capture", str(reference)) if reference else None
    items = body.get("payments")
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    reference = first.get("merchant_payment_reference")
    return ("payment", order_call.group(1), str(reference)) if reference else None


def add_middleware(app: FastAPI, gateway: Gateway, faults: Faults, admin_key: str) -> None:
    """Plural's error body for a ``GatewayError``, the admin key on the sandbox's controls, the
    duplicate check and the faults on Plural's paths."""

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return _error(exc)

    @app.middleware("http")
    async def admin_only(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """The sandbox's controls (config, faults, reset, clock, tokens) need ``X-Sandbox-Key``."""
        if request.url.path.startswith(ADMIN_PREFIXES):
            given = request.headers.get("x-sandbox-key") or ""
            if not secrets.compare_digest(given.encode(), admin_key.encode()):
                return _error(GatewayError(401, "UNAUTHORIZED", "the sandbox's controls need X-Sandbox-Key"))
        return await call_next(request)

    @app.middleware("http")
    async def inject_faults(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if not path.startswith(PLURAL_PREFIXES):
            return await call_next(request)
        key = await _idempotency_key(request)
        if key is not None and not gateway.begin_request(key):
            gateway.duplicates_refused += 1
            return _error(GatewayError(409, "DUPLICATE_REQUEST", "a request with this reference is already in progress"))
        fired = faults.match(request.method, path)
        try:
            return await _with_faults(request, fired, call_next)
        finally:  # the request is in progress from its arrival until its answer leaves
            if key is not None:
                gateway.end_request(key)

    async def _with_faults(request: Request, fired: list[Any],
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        for rule in fired:
            if rule.kind == "latency":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "error":
                status = faults.pick(rule.statuses)
                code = "PAYMENT_RATE_LIMIT" if status == 429 else "INTERNAL_ERROR"
                headers = {"Retry-After": "1"} if status == 429 else {}
                return JSONResponse({"code": code, "message": "injected fault"}, status_code=status, headers=headers)
            elif rule.kind == "hang_before":
                await asyncio.sleep(rule.seconds)
                return JSONResponse({"code": "INTERNAL_ERROR", "message": "gateway timeout"}, status_code=504)
        response = await call_next(request)
        for rule in fired:
            if rule.kind == "hang_after":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "drop_answer":  # handled, but its answer never reaches the caller
                async for _chunk in response.body_iterator:  # type: ignore[attr-defined]
                    pass
                status = faults.pick(rule.statuses)
                return JSONResponse({"code": "INTERNAL_ERROR", "message": "injected fault: answer lost"},
                                    status_code=status)
        return response

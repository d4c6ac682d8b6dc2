"""Plural UAT's paths: token, orders, payments, capture, cancel, refunds, card details, OTP, offers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from devkit.sandbox.gateway import Gateway
from devkit.sandbox.http import read_body


def add_routes(app: FastAPI, gateway: Gateway) -> None:
    def auth(request: Request, *, required: bool = True) -> None:
        gateway.check_token(request.headers.get("authorization"), required=required)

    # --- Plural's API -------------------------------------------------------------------

    @app.post("/api/auth/v1/token")
    async def token(request: Request) -> Any:
        return gateway.issue_token(await read_body(request))

    @app.post("/api/pay/v1/orders")
    async def create_order(request: Request) -> Any:
        auth(request)
        return gateway.create_order(await read_body(request))

    @app.get("/api/pay/v1/orders/reference/{reference}")
    async def order_by_reference(reference: str, request: Request) -> Any:
        auth(request)
        return gateway.get_order_by_reference(reference)

    @app.get("/api/pay/v1/orders/{order_id}")
    async def get_order(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.get_order(order_id)

    @app.post("/api/pay/v1/orders/{order_id}/payments")
    async def create_payment(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.create_payment(order_id, await read_body(request))

    @app.put("/api/pay/v1/orders/{order_id}/capture")
    async def capture(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.capture(order_id, await read_body(request))

    @app.put("/api/pay/v1/orders/{order_id}/cancel")
    async def cancel(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.cancel(order_id)

    @app.post("/api/pay/v1/refunds/{order_id}")
    async def refund(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.refund(order_id, await read_body(request))

    @app.post("/api/pay/v1/getCardDetails")
    async def card_details(request: Request) -> Any:
        auth(request)
        return gateway.card_details(await read_body(request))

    # Plural's OTP samples carry no Authorization header: a token is checked when one is sent
    @app.post("/api/pay/v1/otp/generate")
    async def otp_generate(request: Request) -> Any:
        auth(request, required=False)
        return gateway.generate_otp(await read_body(request))

    @app.post("/api/pay/v1/otp/submit")
    async def otp_submit(request: Request) -> Any:
        auth(request, required=False)
        return gateway.submit_otp(await read_body(request))

    @app.post("/api/pay/v1/otp/resend")
    async def otp_resend(request: Request) -> Any:
        auth(request, required=False)
        return gateway.resend_otp(await read_body(request))

    @app.post("/api/affordability/v1/offer/discovery")
    async def offer_discovery(request: Request) -> Any:
        auth(request)
        return gateway.discover_offers(await read_body(request))

    @app.post("/api/affordability/v1/offer/validate")
    async def offer_validate(request: Request) -> Any:
        auth(request)
        return gateway.validate_offer(await read_body(request))

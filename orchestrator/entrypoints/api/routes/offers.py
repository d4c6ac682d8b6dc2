"""EMI offer discovery."""

from __future__ import annotations

from typing import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from orchestrator.entrypoints.api.errors import MERCHANT_ERRORS
from orchestrator.entrypoints.api.guard import NEEDS_API_KEY
from orchestrator.merchant.schemas import DiscoveryIn
from orchestrator.merchant.service import CheckoutService

def add(app: FastAPI, service_factory: Callable[[], CheckoutService]) -> None:
    @app.post("/v1/offers/discovery", openapi_extra=NEEDS_API_KEY, responses={
        200: {"description": "Plural's issuers and tenures for these terms, exactly as Plural sent them"},
        **MERCHANT_ERRORS})
    def offer_discovery(body: DiscoveryIn) -> JSONResponse:
        """EMI offer discovery: which issuers and tenures Plural offers on this amount and these products."""
        svc = service_factory()
        return JSONResponse(svc.discover(body))

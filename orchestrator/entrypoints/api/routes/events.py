"""Events for backends that pull, and their redelivery."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI, Query

from orchestrator.entrypoints.api.errors import MERCHANT_ERRORS
from orchestrator.entrypoints.api.guard import NEEDS_API_KEY
from orchestrator.merchant.service import CheckoutService

def add(app: FastAPI, service_factory: Callable[[], CheckoutService]) -> None:
    @app.get("/v1/events", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def events(after: str | None = Query(default=None, description="`next` of the previous page (a durable cursor)"),
               type: str | None = Query(default=None, description="one event type"),  # noqa: A002
               limit: int = Query(default=100, ge=1, le=1000)) -> dict[str, Any]:
        """Events for backends that pull: oldest first after the cursor."""
        svc = service_factory()
        return svc.events(after, type, limit)

    @app.post("/v1/events/{event_id}/redeliver", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def redeliver(event_id: str) -> dict[str, Any]:
        """Deliver an event again to ``MERCHANT_WEBHOOK_URL`` (same event id)."""
        svc = service_factory()
        return svc.redeliver(event_id)

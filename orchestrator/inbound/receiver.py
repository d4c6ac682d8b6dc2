"""What Plural sends us: webhooks and the customer's browser coming back to the return URL."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlencode

from orchestrator.domain import saga
from orchestrator.domain.saga import State, Step
from orchestrator.telemetry.logs import get_logger
from orchestrator.plural.signatures import SignatureError, verify_callback
from orchestrator.saga.deps import Deps
from orchestrator.store.models import WebhookEvent
from orchestrator.inbound.webhooks import Ingested, ingest, kick_processor, parse_delivery, store

log = get_logger("orchestrator.inbound.receiver")


@dataclass
class CallbackAnswer:
    status: int
    redirect: str | None = None
    page: str | None = None


@dataclass
class Inbound:
    deps: Deps
    webhook_key: bytes
    callback_key: bytes
    kick: Callable[[], None]

    def webhook(self, body: bytes, headers: dict[str, str]) -> Ingested:
        return ingest(self.deps, self.webhook_key, body, headers, self.kick)

    def parse(self, body: bytes, headers: dict[str, str]) -> WebhookEvent:
        """Verify a delivery (no I/O); ``WebhookRejected`` if it is not Plural's or not an event."""
        return parse_delivery(self.webhook_key, body, headers, self.deps.clock())

    def store(self, rows: list[WebhookEvent]) -> list[bool]:
        """Store a batch of verified deliveries in one transaction and kick one processor for them."""
        new = store(self.deps, rows)
        if any(new):
            kick_processor(self.kick, rows[0].webhook_id)
        return new

    def callback(self, fields: dict[str, str]) -> CallbackAnswer:
        """Verify the return-URL fields, poll Plural at once, send the browser to the merchant."""
        try:
            verify_callback(fields, self.callback_key)
        except SignatureError as exc:
            log.warning("callback.rejected", reason=str(exc), order_id=fields.get("order_id"))
            return CallbackAnswer(400, page=_page("Payment status could not be verified",
                                                  "The signature does not match; nothing was changed."))
        d = self.deps
        checkout = d.repo.by_plural_order(fields.get("order_id", ""))
        if checkout is None:
            return CallbackAnswer(404, page=_page("Unknown order", "No checkout has this order."))
        state = State(checkout.state)
        if state in saga.POLLING:
            # a hint, not the truth: ask Plural now instead of waiting for the next poll. The
            # customer is sent on even when this cannot be done (the sweep polls anyway).
            try:
                d.repo.note(checkout.id, states={state}, next_due_at=d.clock())
                d.enqueue(Step.POLL_ORDER, checkout.id)
            except Exception as exc:
                log.warning("callback.poll_deferred", saga_id=checkout.id, error=type(exc).__name__)
        reported = (fields.get("status") or fields.get("payment_status") or "").upper()
        failed = reported == "FAILED" or bool(fields.get("error_code"))
        log.info("callback.received", saga_id=checkout.id, order_id=checkout.plural_order_id, reported=reported)
        target = (checkout.failure_callback_url or checkout.callback_url) if failed else checkout.callback_url
        if target:
            query = urlencode({"checkout_id": checkout.id, "status": "FAILED" if failed else "RECEIVED"})
            return CallbackAnswer(303, redirect=f"{target}{'&' if '?' in target else '?'}{query}")
        title = "Payment not completed" if failed else "Payment received"
        return CallbackAnswer(200, page=_page(title, f"Checkout {checkout.id}: you can close this window."))


def _page(title: str, text: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>")

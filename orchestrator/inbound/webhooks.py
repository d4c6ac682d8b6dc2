"""Plural's webhooks: raw bytes → verify → persist (unique on ``webhook-id``) → kick → 2xx, then
applied to sagas in batches.

The API stores concurrent deliveries together (``store``: one transaction, one kick per batch,
answered once committed).

Ingestion does not publish one Celery message per webhook: it stores the event and, only when no
processor is already due, sets a Redis flag and publishes one ``tasks.process_webhooks``. The
processor drains every pending event in batches and clears the flag before its last look, so an
event stored meanwhile either is seen by that look or publishes a new kick (``bench/`` measures
the difference).

Applying an event hands the engine a fact from ``Source.WEBHOOK``; the engine's table decides, so
a late or reordered event cannot move a checkout backwards. An event for an order the saga has
not recorded yet is kept (``deferred``) and applied once the order appears.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from orchestrator.telemetry import metrics
from orchestrator.outbound.changes import kick_once
from orchestrator.domain.saga import Source
from orchestrator.store.models import Checkout, WebhookEvent, detached
from orchestrator.store import webhook_events
from orchestrator.telemetry.logs import get_logger
from orchestrator.plural.models import Order
from orchestrator.plural.signatures import WEBHOOK_TOLERANCE, SignatureError, verify_webhook_signature
from orchestrator.plural import errors
from orchestrator.saga.answers import mismatch, order_fact, settle
from orchestrator.saga.deps import TRANSIENT, Deps

log = get_logger("orchestrator.inbound.webhooks")

ORDER_EVENTS = frozenset({"ORDER_AUTHORIZED", "ORDER_PROCESSED", "ORDER_CANCELLED", "ORDER_FAILED", "PAYMENT_FAILED"})
REFUND_EVENTS = frozenset({"REFUND_PROCESSED", "REFUND_FAILED"})
KICK_KEY = "webhooks:kick"
#: the note of an event whose timestamp was outside the tolerance: applied only through Get Order
LATE = "late delivery"
DEFER_FOR = dt.timedelta(days=7)
#: a claim taken before claims had an end (claim_until) lapses this long after it was taken
STALE_CLAIM = dt.timedelta(minutes=5)


class WebhookRejected(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Ingested:
    event_id: int | None
    duplicate: bool
    event_type: str


def ingest(d: Deps, key: bytes, body: bytes, headers: dict[str, str], kick: Callable[[], None]) -> Ingested:
    """Verify and store one delivery; a bad signature or body stores nothing."""
    row = parse_delivery(key, body, headers, d.clock())
    (new,) = store(d, [row])
    if new:
        kick_processor(kick, row.webhook_id)
    return Ingested(row.id, not new, row.event_type)


#: the Standard Webhooks headers a delivery must carry before its body is read
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def require_signature_headers(headers: Any) -> None:
    """``WebhookRejected`` (401) unless the signature headers are there: checked before the body
    is read, so an unsigned delivery costs no memory."""
    missing = [name for name in SIGNATURE_HEADERS if not headers.get(name)]
    if missing:
        metrics.WEBHOOKS.labels("bad_signature").inc()
        raise WebhookRejected(401, "INVALID_SIGNATURE", f"missing {', '.join(missing)}")


def parse_delivery(key: bytes, body: bytes, headers: dict[str, str], now: dt.datetime) -> WebhookEvent:
    """Verify one delivery and read it into an (unsaved) event; ``WebhookRejected`` otherwise."""
    try:
        stamp = verify_webhook_signature(key, body, headers)
    except SignatureError as exc:
        metrics.WEBHOOKS.labels("bad_signature").inc()
        raise WebhookRejected(401, "INVALID_SIGNATURE", str(exc)) from None
    # Plural retries for hours and may keep the event's first timestamp: a late delivery signed by
    # Plural is kept (and deduplicated), but not believed: applying it asks Get Order first
    age = int(now.timestamp()) - stamp
    late = None if abs(age) <= WEBHOOK_TOLERANCE else f"{LATE}: webhook-timestamp {age} s from receipt"
    if late:
        metrics.WEBHOOKS.labels("late").inc()
    try:
        payload = json.loads(body)
    except ValueError:
        raise WebhookRejected(400, "MALFORMED_BODY", "body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("event_type"), str) \
            or not isinstance(payload.get("data"), dict):
        raise WebhookRejected(400, "MALFORMED_BODY", "body must be {\"event_type\": str, \"data\": object}")
    data = payload["data"]
    webhook_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
    # built like a row read back (``detached``): a table model's validating constructor costs
    # about as much as the rest of the delivery's handling
    return detached(WebhookEvent, {
        "webhook_id": webhook_id[:128], "event_type": payload["event_type"][:64],
        "order_id": _short(data.get("order_id")),
        "merchant_order_reference": _short(data.get("merchant_order_reference")),
        "order_status": _short(data.get("status"), 32), "body": body.decode(), "received_at": now, "note": late})


def store(d: Deps, rows: list[WebhookEvent]) -> list[bool]:
    """Store verified deliveries in one transaction (a group commit); for each, whether it was new
    (it then has its ``id``). A delivery whose ``webhook-id`` is stored already (a retry, or twice in this batch) is a
    duplicate: it is acknowledged and never processed again."""
    if not rows:
        return []
    stored = webhook_events.add(d.repo, rows)
    for row in rows:
        metrics.WEBHOOKS.labels("stored" if row.webhook_id in stored and row.id is None else "duplicate").inc()
        if row.webhook_id in stored and row.id is None:
            row.id = stored.pop(row.webhook_id)
            if row.event_type not in ORDER_EVENTS | REFUND_EVENTS:
                log.info("webhook.unknown_event", webhook_id=row.webhook_id, event_type=row.event_type)
            else:
                log.info("webhook.received", webhook_id=row.webhook_id, event_type=row.event_type,
                         order_id=row.order_id)
        else:
            log.info("webhook.duplicate", webhook_id=row.webhook_id, event_type=row.event_type)
    return [row.id is not None for row in rows]


def kick_processor(kick: Callable[[], None], webhook_id: str) -> None:
    """Kick, never failing the caller: stored events are found by the sweep anyway."""
    try:
        kick()
    except Exception as exc:  # stored: the sweep finds pending events nobody is processing
        log.warning("webhook.kick_deferred", webhook_id=webhook_id, error=type(exc).__name__)


def _short(value: Any, length: int = 64) -> str | None:
    return str(value)[:length] if value is not None else None


def redis_kick(redis: Any, publish: Callable[[], None], ttl: int = 30) -> Callable[[], None]:
    """One processor message while one is due, not one per webhook."""
    return kick_once(redis, KICK_KEY, publish, ttl)


# --- processing -----------------------------------------------------------------------------


def claim_batch(d: Deps, limit: int, statuses: tuple[str, ...] = ("pending",)) -> list[WebhookEvent]:
    token = uuid.uuid4().hex
    now = d.clock()
    return webhook_events.claim_batch(d.repo, token, now, limit, statuses, d.leases.lease_seconds, DEFER_FOR)


#: what became of one event: (the event, its status, a note)
Outcome = tuple[WebhookEvent, str, str]


def _finish(d: Deps, outcomes: list[Outcome]) -> None:
    """Record the outcomes of a batch of events in one transaction."""
    if not outcomes:
        return
    now = d.clock()
    webhook_events.finish(d.repo, now, outcomes)
    for event, status, note in outcomes:
        log.info("webhook.processed", webhook_id=event.webhook_id, event_type=event.event_type, outcome=status,
                 note=note)


def _checkout_for(d: Deps, event: WebhookEvent) -> Checkout | None:
    if event.order_id:
        found = d.repo.by_plural_order(event.order_id)
        if found is not None:
            return found
    if event.merchant_order_reference:
        return d.repo.by_reference(event.merchant_order_reference)
    return None


def apply(d: Deps, event: WebhookEvent) -> tuple[str, str]:
    """Hand the event's snapshot to the engine as a fact from ``Source.WEBHOOK``.

    Plural's snapshot of our order is true of some moment; the move table only ever moves a
    checkout forward along Plural's own order lifecycle, so a late, retried or reordered event
    finds no move and changes nothing (a stale ``ORDER_AUTHORIZED`` during a capture, a stale
    ``PAYMENT_FAILED`` after an authorization). Polling settles whatever an event cannot.
    Returns the event's status and a note, recorded with its batch.
    """
    if event.event_type not in ORDER_EVENTS | REFUND_EVENTS:
        return "ignored", f"unknown event type {event.event_type}"
    try:
        order = Order.model_validate(json.loads(event.body)["data"])
    except (ValueError, KeyError):
        return "ignored", "data is not an order"
    if event.event_type in REFUND_EVENTS:
        from orchestrator.saga.steps.refund import apply_refund_event

        if event.note is not None:
            try:  # a late (or kept waiting) refund event is not believed: what Plural says of that refund order now is
                order = d.plural.get_order(order.order_id)
            except TRANSIENT as exc:
                return "deferred", f"Get Order failed, retried by the sweep: {type(exc).__name__}"
            except errors.APIError as exc:
                return "ignored", f"Get Order refused: {exc.code}"

        note = apply_refund_event(d, order)
        return "applied" if note else "deferred", note or "refund not recorded yet"
    checkout = _checkout_for(d, event)
    if checkout is None or checkout.plural_order_id is None:
        return "deferred", "order not recorded by any saga yet"
    if checkout.plural_order_id != order.order_id:
        return "ignored", "order does not belong to this saga"
    before = checkout.state
    source = Source.WEBHOOK
    if event.note is not None:
        # an event that was kept waiting may be old: what Plural says now is applied instead
        try:
            order = d.plural.get_order(checkout.plural_order_id)
        except TRANSIENT as exc:
            return "deferred", f"Get Order failed, retried by the sweep: {type(exc).__name__}"
        except errors.APIError as exc:
            return "ignored", f"Get Order refused: {exc.code}"
        source = Source.POLL
    fact, _fields = order_fact(d, checkout, order)
    if fact is None and mismatch(d, checkout, order) is None:
        return "applied", f"nothing decided yet ({order.status})"
    moved = settle(d, checkout, order, f"webhook {event.event_type}", source)
    note = f"{before} → {(d.repo.get(checkout.id) or checkout).state}" if moved else f"no move from {before}"
    return "applied", note


def process_pending(d: Deps, redis: Any | None = None, batch: int = 200) -> int:
    """Drain pending events in batches; clear the kick flag before the last look."""
    done = 0
    while True:
        events = claim_batch(d, batch)
        if not events:
            if redis is not None:
                redis.delete(KICK_KEY)
            events = claim_batch(d, batch)
            if not events:
                return done
        outcomes: list[Outcome] = []
        token = events[0].claim
        with d.leases.holding(WebhookEvent, str(token), lambda: token):  # renewed while this process lives
            for event in events:
                try:
                    outcomes.append((event, *apply(d, event)))
                except Exception as exc:  # one bad event must not block the rest
                    log.exception("webhook.apply_failed", webhook_id=event.webhook_id)
                    outcomes.append((event, "pending" if event.attempts < 5 else "failed",
                                     f"error: {type(exc).__name__}"))
                done += 1
            _finish(d, outcomes)


def retry_deferred(d: Deps, batch: int = 200) -> int:
    """Release kept events whose order a saga has recorded since, and stale claims (the sweep calls
    this); returns how much is waiting for a processor."""
    ready, waiting = webhook_events.release(d.repo, d.clock, batch, DEFER_FOR, STALE_CLAIM)
    return len(ready) + (1 if waiting else 0)

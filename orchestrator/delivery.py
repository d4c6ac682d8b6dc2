"""Delivering the outbox to the merchant's backend.

Each pending event is POSTed to ``MERCHANT_WEBHOOK_URL`` as JSON (``{id, type, created_at,
data}``), signed with Standard Webhooks (``webhook-id`` is the event's id, the same on every
attempt, so the receiver can drop repeats), and, with ``MERCHANT_EVENTS_TASK``, sent once as a
Celery task on this broker. A 2xx delivers it; anything else (an error answer, a refused or
timed-out connection) is retried with exponential backoff (``BACKOFF``, then every 12 hours) for
``MERCHANT_EVENT_RETRY_SECONDS`` (3 days), then the event is ``failed``, visible and redeliverable.
Every attempt is recorded (outcome, status code, latency).

Events of one checkout (its refunds' too) are delivered in order: only the oldest pending event of
each checkout is ever due, so a checkout whose endpoint answers 500 waits, and the others do not.
Deliveries are claimed like webhooks (a claim and its time; a stale claim is taken over), run a
few at a time on the ``events`` queue with a bounded timeout, so an endpoint that keeps failing
costs a backoff row, not a worker.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import requests
from sqlalchemy import and_, exists, insert, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from orchestrator import metrics
from orchestrator.changes import kick_once
from orchestrator.db.models import MerchantEvent, MerchantEventAttempt, aware
from orchestrator.db.repo import Repo
from orchestrator.logs import get_logger, mask_text
from orchestrator.outbox import envelope
from orchestrator.plural.signatures import webhook_headers

log = get_logger("orchestrator.delivery")

#: seconds before the 2nd, 3rd… attempt; then every 12 hours until the retry period ends
BACKOFF = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
LATER = 12 * 3600
KICK_KEY = "events:kick"


def next_delay(attempts: int, backoff: tuple[float, ...] = BACKOFF) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (``backoff``, then every 12 hours)."""
    return float(backoff[attempts - 1]) if attempts <= len(backoff) else float(LATER)


def backoff_of(settings: Any) -> tuple[float, ...]:
    text = getattr(settings, "merchant_event_backoff", None)
    return tuple(float(x) for x in text.split(",")) if text else BACKOFF


def key_of(secret: str) -> bytes:
    """The raw key of a Standard Webhooks secret (``whsec_`` + base64)."""
    import base64

    return base64.b64decode(secret.removeprefix("whsec_"))


@dataclass
class Result:
    outcome: str  # delivered | failed
    status_code: int | None
    latency_ms: int
    error: str | None


def claim_seconds(settings: Any) -> float:
    """How long a deliverer owns the events it took: past an attempt's worst case, then taken over."""
    return 2 * settings.merchant_webhook_timeout + 5


def claim_due(repo: Repo, now: dt.datetime, limit: int, lease: float) -> list[MerchantEvent]:
    """Take up to ``limit`` due events, the oldest pending one of each checkout only; a claim
    older than ``lease`` seconds (its deliverer died) is taken over."""
    earlier = aliased(MerchantEvent)
    blocked = exists().where(and_(col(earlier.subject_id) == col(MerchantEvent.subject_id),
                                  col(earlier.id) < col(MerchantEvent.id), col(earlier.status) == "pending"))
    free = or_(col(MerchantEvent.claim).is_(None),
               col(MerchantEvent.claimed_at) < now - dt.timedelta(seconds=lease))
    due = (select(MerchantEvent.id).where(col(MerchantEvent.status) == "pending",
                                          col(MerchantEvent.next_attempt_at) <= now, free, ~blocked)
           .order_by(col(MerchantEvent.id)).limit(limit))
    with repo.read_session() as s:  # nothing due (mostly): no write
        ids = list(s.exec(due))
    if not ids:
        return []
    token = uuid.uuid4().hex
    with repo.session() as s:
        s.connection().execute(update(MerchantEvent).where(col(MerchantEvent.id).in_(ids), free,
                                                           col(MerchantEvent.status) == "pending")
                               .values(claim=token, claimed_at=now))
        s.commit()
        return list(s.exec(select(MerchantEvent).where(MerchantEvent.claim == token).order_by(col(MerchantEvent.id))))


def post(settings: Any, http: requests.Session, event: MerchantEvent) -> Result:
    body = json.dumps(envelope(event), separators=(",", ":"))
    headers = {**webhook_headers(key_of(settings.merchant_webhook_secret.get_secret_value()), event.event_id,
                                 int(time.time()), body), "content-type": "application/json"}
    started = time.perf_counter()
    try:
        answer = http.post(settings.merchant_webhook_url, data=body.encode(), headers=headers,
                           timeout=(min(3.0, settings.merchant_webhook_timeout), settings.merchant_webhook_timeout))
    except requests.RequestException as exc:
        return Result("failed", None, int((time.perf_counter() - started) * 1000), mask_text(type(exc).__name__))
    latency = int((time.perf_counter() - started) * 1000)
    if 200 <= answer.status_code < 300:
        return Result("delivered", answer.status_code, latency, None)
    return Result("failed", answer.status_code, latency, mask_text(answer.text[:200]))


def record(repo: Repo, event: MerchantEvent, result: Result, now: dt.datetime, retry_for: float,
           backoff: tuple[float, ...] = BACKOFF) -> str:
    """Record one attempt and what follows from it: delivered, retried later, or failed."""
    attempts = event.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "claim": None, "last_error": result.error}
    if result.outcome == "delivered":
        values.update(status="delivered", delivered_at=now, next_attempt_at=None)
    else:
        created = aware(event.created_at) or now
        later = now + dt.timedelta(seconds=next_delay(attempts, backoff))
        if later - created > dt.timedelta(seconds=retry_for):
            values.update(status="failed", next_attempt_at=None)
        else:
            values.update(next_attempt_at=later)
    with repo.session() as s:
        s.connection().execute(insert(MerchantEventAttempt.__table__).values(  # type: ignore[attr-defined]
            event_id=event.id, attempted_at=now, outcome=result.outcome, status_code=result.status_code,
            latency_ms=result.latency_ms, error=result.error))
        s.connection().execute(update(MerchantEvent).where(col(MerchantEvent.id) == event.id)
                               .values(**values))
        s.commit()
    status = values.get("status", "pending")
    metrics.EVENT_ATTEMPTS.labels(result.outcome).inc()
    log.info("event.delivery", event_id=event.event_id, type=event.type, outcome=result.outcome,
             status_code=result.status_code, latency_ms=result.latency_ms, attempts=attempts, now=status)
    return status


def deliver_due(repo: Repo, settings: Any, send_task: Callable[[str, dict[str, Any]], None] | None = None,
                http: requests.Session | None = None, clock: Callable[[], dt.datetime] | None = None,
                batch: int = 100, parallel: int = 8, before_last_look: Callable[[], None] | None = None) -> int:
    """Deliver what is due, batch after batch; the number of attempts made. ``before_last_look``
    (clearing the kick flag) runs before the final look, so an event committed meanwhile is either
    seen by that look or kicks a new deliverer."""
    if not pushes(settings, sends_tasks=send_task is not None):
        return 0
    from orchestrator.db.models import utcnow

    now_of = clock or utcnow
    http = http or requests.Session()
    made = 0
    with cf.ThreadPoolExecutor(parallel) as pool:
        while True:
            events = claim_due(repo, now_of(), batch, claim_seconds(settings))
            if not events and before_last_look is not None:
                before_last_look()
                events = claim_due(repo, now_of(), batch, claim_seconds(settings))
            if not events:
                return made
            list(pool.map(lambda e: _deliver(repo, settings, send_task, http, e, now_of), events))
            made += len(events)


def _deliver(repo: Repo, settings: Any, send_task: Callable[[str, dict[str, Any]], None] | None,
             http: requests.Session, event: MerchantEvent, now_of: Callable[[], dt.datetime]) -> None:
    if settings.merchant_events_task and send_task and event.task_sent_at is None:
        try:
            send_task(settings.merchant_events_task, envelope(event))
            with repo.session() as s:
                s.connection().execute(update(MerchantEvent).where(col(MerchantEvent.id) == event.id)
                                       .values(task_sent_at=now_of()))
                s.commit()
        except Exception as exc:  # the broker is down: the next attempt sends it
            record(repo, event, Result("failed", None, 0, f"task not sent: {type(exc).__name__}"), now_of(),
                   settings.merchant_event_retry_seconds, backoff_of(settings))
            return
    if settings.merchant_webhook_url:
        record(repo, event, post(settings, http, event), now_of(), settings.merchant_event_retry_seconds,
               backoff_of(settings))
    else:
        record(repo, event, Result("delivered", None, 0, None), now_of(), settings.merchant_event_retry_seconds)


def any_due(repo: Repo, now: dt.datetime) -> bool:
    with repo.read_session() as s:
        return s.exec(select(MerchantEvent.id).where(col(MerchantEvent.status) == "pending",
                                                     col(MerchantEvent.next_attempt_at) <= now).limit(1)).first() is not None


def redeliver(repo: Repo, event_id: str, now: dt.datetime) -> MerchantEvent | None:
    """Deliver an event again (whatever became of it), as soon as it is the oldest of its checkout."""
    with repo.session() as s:
        result = s.connection().execute(update(MerchantEvent).where(col(MerchantEvent.event_id) == event_id)
                                        .values(status="pending", next_attempt_at=now, claim=None))
        s.commit()
        if result.rowcount != 1:
            return None
    with repo.read_session() as s:
        return s.exec(select(MerchantEvent).where(MerchantEvent.event_id == event_id)).first()


def pushes(settings: Any, sends_tasks: bool = True) -> bool:
    """Is there anywhere to push events (a URL, or a task this process can send)? Without, they
    wait for ``GET /v1/events``."""
    return bool(settings.merchant_webhook_url or (settings.merchant_events_task and sends_tasks))


def redis_kick(redis: Any, publish: Callable[[], None], settings: Any, ttl: int = 10) -> Callable[[], None]:
    """One deliverer message while one is due, not one per event; none at all (no Redis round
    trip per status change) when there is nowhere to push."""
    if not pushes(settings):
        return lambda: None
    return kick_once(redis, KICK_KEY, publish, ttl)

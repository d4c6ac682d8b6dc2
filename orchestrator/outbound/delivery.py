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
Each event is claimed just before its send (a claim token and its time; a claim older than
``claim_seconds``, past one attempt's worst case, is taken over), and its outcome is recorded only
while that claim holds: a sender whose claim was taken over records nothing. Sends run a few at a
time on the ``events`` queue with a bounded timeout and never follow a redirect (a 3xx is a
failed attempt), so an endpoint that keeps failing costs a backoff row, not a worker. Outside the
sandbox the URL must be https and its host is resolved again before every send: a loopback,
link-local or private address is refused (a failed attempt) unless
``MERCHANT_WEBHOOK_ALLOW_PRIVATE``. Whatever an attempt raises is recorded as a failed attempt.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import requests
from config.settings import merchant_webhook_key
from orchestrator.telemetry import metrics
from orchestrator.outbound.changes import kick_once
from orchestrator.store import events
from orchestrator.store.models import MerchantEvent, aware
from orchestrator.store.repo import Repo
from orchestrator.telemetry.logs import get_logger, mask_text
from orchestrator.outbound.outbox import envelope
from orchestrator.plural.signatures import webhook_headers

log = get_logger("orchestrator.outbound.delivery")

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
    """The raw key of a Standard Webhooks secret (``whsec_`` + base64, padded or not): the
    settings' decoder, so a secret that passed them signs."""
    return merchant_webhook_key(secret)


@dataclass
class Result:
    outcome: str  # delivered | failed
    status_code: int | None
    latency_ms: int
    error: str | None


def claim_seconds(settings: Any) -> float:
    """How long a deliverer owns the events it took: past an attempt's worst case, then taken over."""
    return 2 * settings.merchant_webhook_timeout + 5


def due(repo: Repo, now: dt.datetime, limit: int, lease: float) -> list[int]:
    """Up to ``limit`` due events (a look, no claim): the oldest pending one of each checkout, not
    claimed, or claimed more than ``lease`` seconds ago (its deliverer died)."""
    return events.due(repo, now, limit, lease)


def claim(repo: Repo, event_id: int, now: dt.datetime, lease: float) -> MerchantEvent | None:
    """Claim one due event for one send (compare-and-set: still pending, due, free and the oldest
    pending of its checkout); the event with its new ``claim`` token, or None if another sender
    has it. The claim covers one attempt only, so it never lapses while a batch waits its turn."""
    token = uuid.uuid4().hex
    return events.claim(repo, event_id, token, now, lease)


#: the most of a merchant's answer that is read (an error text is kept to 200 characters)
ANSWER_LIMIT = 4096


class _Watched:
    """Connections of a delivery session name their socket to the thread sending, before waiting
    for the answer, so a deadline can cut a merchant endpoint that answers one byte at a time."""

    current = threading.local()

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(_Watched.current, "sockets", None)
        if watch is not None and getattr(self, "sock", None) is not None:
            watch.append(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


def delivery_session() -> requests.Session:
    """A session for merchant deliveries whose every attempt is held to one overall deadline."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Conn(_Watched, HTTPConnection):
        pass

    class SConn(_Watched, HTTPSConnection):
        pass

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class SPool(HTTPSConnectionPool):
        ConnectionCls = SConn

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": SPool}

    session = requests.Session()
    session.mount("http://", Adapter())
    session.mount("https://", Adapter())
    return session


def post(settings: Any, http: requests.Session, event: MerchantEvent, problem: str | None = None) -> Result:
    """One signed POST; never a redirect followed (a 3xx is a failed attempt with its status).
    ``problem``: why the destination is refused (``Settings.merchant_url_problem``, its host
    resolved afresh by the caller before the claim, so a slow look-up does not eat into it).

    The whole attempt, the answer included, ends within ``MERCHANT_WEBHOOK_TIMEOUT`` (an endpoint
    that answers byte by byte is cut off there, so the attempt always ends inside its claim), and
    at most ``ANSWER_LIMIT`` bytes of the answer are read."""
    if problem:  # e.g. a host that moved to a private address since the settings' check
        return Result("failed", None, 0, mask_text(f"refused: {problem}"))
    body = json.dumps(envelope(event), separators=(",", ":"))
    headers = {**webhook_headers(key_of(settings.merchant_webhook_secret.get_secret_value()), event.event_id,
                                 int(time.time()), body), "content-type": "application/json"}
    limit = settings.merchant_webhook_timeout
    started = time.perf_counter()
    sockets: list[Any] = []
    _Watched.current.sockets = sockets
    cut = threading.Timer(limit, _cut, (sockets,))
    cut.daemon = True
    cut.start()
    try:
        with http.post(settings.merchant_webhook_url, data=body.encode(), headers=headers, allow_redirects=False,
                       timeout=(min(3.0, limit), limit), stream=True) as answer:
            status = answer.status_code
            text_of = b""
            if not 200 <= status < 400:
                for chunk in answer.iter_content(1024):
                    text_of += chunk
                    if len(text_of) >= ANSWER_LIMIT or time.perf_counter() - started > limit:
                        break
    except requests.RequestException as exc:
        timed_out = time.perf_counter() - started >= limit
        return Result("failed", None, int((time.perf_counter() - started) * 1000),
                      "deadline passed" if timed_out else mask_text(type(exc).__name__))
    finally:
        cut.cancel()
        _Watched.current.sockets = None
    latency = int((time.perf_counter() - started) * 1000)
    if 200 <= status < 300:
        return Result("delivered", status, latency, None)
    if 300 <= status < 400:
        return Result("failed", status, latency, "redirect not followed")
    return Result("failed", status, latency, mask_text(text_of[:ANSWER_LIMIT].decode("utf-8", "replace")[:200]))


def _cut(sockets: list[Any]) -> None:
    """The deadline: shut the attempt's sockets, which ends a read blocked on them."""
    for sock in list(sockets):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def record(repo: Repo, event: MerchantEvent, result: Result, now: dt.datetime, retry_for: float,
           backoff: tuple[float, ...] = BACKOFF) -> str | None:
    """Record one attempt and what follows from it: delivered, retried later, or failed; fenced on
    the event's claim (``event.claim``): if another sender took the claim over meanwhile, nothing
    is recorded and None is returned (the taker's attempt is the one that counts)."""
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
    attempt = {"attempted_at": now, "outcome": result.outcome, "status_code": result.status_code,
               "latency_ms": result.latency_ms, "error": result.error}
    if not events.record(repo, event, values, attempt):
        log.warning("event.claim_lost", event_id=event.event_id, type=event.type, outcome=result.outcome,
                    status_code=result.status_code)
        return None
    status = values.get("status", "pending")
    metrics.EVENT_ATTEMPTS.labels(result.outcome).inc()
    log.info("event.delivery", event_id=event.event_id, type=event.type, outcome=result.outcome,
             status_code=result.status_code, latency_ms=result.latency_ms, attempts=attempts, now=status)
    return status


def deliver_due(repo: Repo, settings: Any, send_task: Callable[[str, dict[str, Any]], None] | None = None,
                http: requests.Session | None = None, clock: Callable[[], dt.datetime] | None = None,
                batch: int = 100, parallel: int = 8, before_last_look: Callable[[], None] | None = None) -> int:
    """Deliver what is due, batch after batch, each event claimed just before its send; the
    number of attempts recorded. ``before_last_look`` (clearing the kick flag) runs before the
    final look, so an event committed meanwhile is either seen by that look or kicks a new
    deliverer."""
    if not pushes(settings, sends_tasks=send_task is not None):
        return 0
    from orchestrator.store.models import utcnow

    now_of = clock or utcnow
    http = http or delivery_session()
    lease = claim_seconds(settings)
    made = 0
    with cf.ThreadPoolExecutor(parallel) as pool:
        while True:
            ids = due(repo, now_of(), batch, lease)
            if not ids and before_last_look is not None:
                before_last_look()
                ids = due(repo, now_of(), batch, lease)
            if not ids:
                return made
            made += sum(pool.map(lambda i: _claim_and_deliver(repo, settings, send_task, http, i, now_of, lease), ids))


def _claim_and_deliver(repo: Repo, settings: Any, send_task: Callable[[str, dict[str, Any]], None] | None,
                       http: requests.Session, event_id: int, now_of: Callable[[], dt.datetime], lease: float) -> bool:
    """Claim one event, make one attempt, record it (fenced on the claim); whether it was recorded.
    Whatever the attempt raises is a failed attempt, never an event left claimed with nothing."""
    try:  # before the claim: a slow DNS look-up does not eat into it
        problem = settings.merchant_url_problem() if settings.merchant_webhook_url else None
    except Exception as exc:
        problem = f"destination check raised {type(exc).__name__}"
    event = claim(repo, event_id, now_of(), lease)
    if event is None:
        return False
    try:
        result = _attempt(repo, settings, send_task, http, event, now_of, problem)
    except Exception as exc:
        log.warning("event.delivery_error", event_id=event.event_id, type=event.type, error=type(exc).__name__)
        result = Result("failed", None, 0, f"delivery raised {type(exc).__name__}")
    if result is None:
        return False
    status = record(repo, event, result, now_of(), settings.merchant_event_retry_seconds, backoff_of(settings))
    return status is not None


def _attempt(repo: Repo, settings: Any, send_task: Callable[[str, dict[str, Any]], None] | None,
             http: requests.Session, event: MerchantEvent, now_of: Callable[[], dt.datetime],
             problem: str | None) -> Result | None:
    """One attempt: the task once, then the POST; None if the claim was lost meanwhile."""
    if settings.merchant_events_task and send_task and event.task_sent_at is None:
        try:
            send_task(settings.merchant_events_task, envelope(event))
        except Exception as exc:  # the broker is down: the next attempt sends it
            return Result("failed", None, 0, f"task not sent: {type(exc).__name__}")
        if not events.mark_sent(repo, event, now_of()):
            log.warning("event.claim_lost", event_id=event.event_id, type=event.type, outcome="task_sent",
                        status_code=None)
            return None
    if settings.merchant_webhook_url:
        return post(settings, http, event, problem)
    return Result("delivered", None, 0, None)


def any_due(repo: Repo, now: dt.datetime) -> bool:
    return events.any_due(repo, now)


def redeliver(repo: Repo, event_id: str, now: dt.datetime) -> MerchantEvent | None:
    """Deliver an event again (whatever became of it), as soon as it is the oldest of its checkout."""
    return events.redeliver(repo, event_id, now)


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

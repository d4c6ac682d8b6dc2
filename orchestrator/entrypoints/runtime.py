"""Process-wide collaborators built once from settings: engine, repository, Redis, vault, Plural client."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from config import Settings, get_settings
from orchestrator.telemetry import metrics
from orchestrator.outbound.changes import Announce, redis_announcer, silent
from orchestrator.outbound.delivery import redis_kick as delivery_kick
from orchestrator.domain.saga import Step
from orchestrator.store.database import make_engine, ping
from orchestrator.store.models import utcnow
from orchestrator.store.repo import Repo
from orchestrator.saga.leases import Leases
from orchestrator.plural import PluralClient
from orchestrator.saga.deps import Deps
from orchestrator.store.vault import Vault


def redis_client(settings: Settings) -> Any:
    """This process's Redis client. Every worker thread may want a connection at the same moment:
    past the pool's bound a thread waits for one (up to 10 s) instead of failing at once, as
    redis-py's default pool does past 100."""
    import redis

    pool = redis.BlockingConnectionPool.from_url(
        settings.broker_url, max_connections=2 * settings.pool_threads, timeout=10,
        socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
    return redis.Redis(connection_pool=pool)


#: an enqueue after a commit tries once more, at once, then gives up: the row's due time has the
#: sweep send the step when the broker is back, so a request never waits long on a broker that is down
ENQUEUE_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


def celery_enqueue(app: Any) -> Callable[[Step, str], None]:
    def enqueue(step: Step, checkout_id: str) -> None:
        app.send_task(f"tasks.{step.value}", args=[checkout_id], retry_policy=ENQUEUE_RETRY)

    return enqueue


@dataclass
class Runtime:
    settings: Settings
    repo: Repo
    redis: Any
    vault: Vault
    plural: PluralClient
    enqueue: Callable[[Step, str], None]
    announce: Announce = silent
    kick_events: Callable[[], None] = lambda: None
    #: the live runs' claims, renewed by a thread started with this process's first run
    leases: Leases | None = None
    _deps: Deps | None = field(default=None, init=False, repr=False)
    _deps_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    #: what readiness fails on: this process cannot take work without them. The rest is reported.
    REQUIRED = ("database", "redis")

    def readiness(self, full: bool = True) -> dict[str, Any]:
        """Can this process reach its database and Redis right now (``REQUIRED``)? Also reported,
        without failing readiness (``full``: for whom may see them): Plural's access token, the
        broker's queues, the event backlog."""
        checks: dict[str, str] = {}
        try:
            ping(self.repo.read_engine)
            checks["database"] = "ok"
        except Exception as exc:  # a readiness probe reports, it does not raise
            checks["database"] = type(exc).__name__
        try:
            self.redis.ping()
            checks["redis"] = "ok"
            if full:
                checks["broker"] = {queue: int(self.redis.llen(queue)) for queue in ("saga", "events")}
        except Exception as exc:
            checks["redis"] = type(exc).__name__
        if not full:  # an anonymous probe costs two pings, never the backlog's queries
            return checks
        try:
            checks["token"] = self.plural.requestor.tokens.status()
        except Exception as exc:
            checks["token"] = type(exc).__name__
        try:
            from orchestrator.store import reports
            from orchestrator.store.models import utcnow

            events = reports.overview(self.repo, utcnow(), limit=1)["events"]
            checks["outbox"] = {"pending": events["pending"], "failed": events["failed"],
                                "oldest_pending_seconds": events["oldest_pending_seconds"]}
        except Exception as exc:
            checks["outbox"] = type(exc).__name__
        return checks

    def inbound(self) -> Any:
        """Plural's webhooks and return URL, wired to this process's collaborators."""
        from orchestrator.inbound.receiver import Inbound
        from orchestrator.inbound.webhooks import redis_kick
        from workers.celery_app import app

        kick = redis_kick(self.redis, lambda: app.send_task("tasks.process_webhooks"))
        return Inbound(self.deps(), self.settings.webhook_key(), self.settings.callback_key(), kick)

    def idempotency(self) -> Any:
        from orchestrator.store.idempotency import IdempotencyStore

        return IdempotencyStore(self.repo)

    def deps(self) -> Deps:
        """The steps' collaborators and their one engine, built once for this process."""
        with self._deps_lock:
            if self._deps is None:
                self._deps = Deps(settings=self.settings, repo=self.repo, plural=self.plural, vault=self.vault,
                                  enqueue=self.enqueue, announce=self.announce, kick_events=self.kick_events,
                                  leases=self.leases)
            return self._deps

    def service(self) -> Any:
        from orchestrator.merchant.service import CheckoutService

        return CheckoutService(self.deps())


_lock = threading.Lock()
_runtime: Runtime | None = None


def _forget_in_child() -> None:
    """A forked process (a prefork worker) builds its own collaborators: connections and the
    leases' thread do not survive a fork."""
    global _runtime, _lock
    _runtime, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            from workers.celery_app import app

            settings = get_settings()
            redis = redis_client(settings)
            repo = Repo(make_engine(settings.sqlalchemy_url, threads=settings.pool_threads))
            _runtime = Runtime(
                settings=settings,
                repo=repo,
                redis=redis,
                vault=Vault(redis, settings.card_encryption_key.get_secret_value()),
                plural=PluralClient.from_settings(settings, redis=redis, observe=metrics.observe_gateway),
                enqueue=celery_enqueue(app),
                announce=redis_announcer(redis),
                kick_events=delivery_kick(redis, lambda: app.send_task("tasks.deliver_events", queue="events"),
                                          settings),
                leases=Leases.from_settings(repo, settings, utcnow, renewing=True),
            )
        return _runtime

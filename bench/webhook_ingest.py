"""How fast can the receiver take webhooks: one Celery message per webhook, or one kick per batch?

Runs ``orchestrator.inbound.webhooks.ingest`` (verify, store, kick) for N signed deliveries against a real
Redis (the embedded redis-server) and SQLite, and prints deliveries per second for both ways of
handing events to the workers, plus how many broker messages each published.

    .venv/bin/python bench/webhook_ingest.py [N]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis as redis_lib


def main(n: int) -> None:
    from celery import Celery

    from config import Settings
    from orchestrator.store.database import make_engine
    from orchestrator.store.migrate import upgrade
    from orchestrator.store.repo import Repo
    from orchestrator.plural.signatures import webhook_headers
    from devkit.redis_server import EmbeddedRedis, free_port
    from orchestrator.saga.deps import Deps
    from orchestrator.telemetry.logs import configure_logging
    from orchestrator.inbound.webhooks import KICK_KEY, ingest, redis_kick

    configure_logging("WARNING", "console")

    tmp = Path(tempfile.mkdtemp())
    server = EmbeddedRedis(free_port(), tmp / "redis", persistent=False)
    url = server.start()
    try:
        r = redis_lib.Redis.from_url(url)
        celery = Celery("bench", broker=url)
        settings = Settings()
        key = settings.webhook_key()
        results = {}
        for mode in ("one message per webhook", "one kick per batch"):
            db = f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}"
            upgrade(db)
            deps = Deps(settings=settings, repo=Repo(make_engine(db)), plural=None, vault=None,  # type: ignore[arg-type]
                        enqueue=lambda *_: None)
            r.flushdb()
            published = [0]

            def publish() -> None:
                celery.send_task("tasks.process_webhooks")
                published[0] += 1

            kick = publish if mode.startswith("one message") else redis_kick(r, publish)
            bodies = []
            for i in range(n):
                body = json.dumps({"event_type": "ORDER_PROCESSED", "data": {
                    "order_id": f"v1-{i}", "status": "PROCESSED", "payments": []}}).encode()
                bodies.append((body, webhook_headers(key, f"msg_{uuid.uuid4().hex}", int(time.time()), body)))
            started = time.perf_counter()
            for body, headers in bodies:
                ingest(deps, key, body, headers, kick)
            elapsed = time.perf_counter() - started
            results[mode] = (n / elapsed, published[0])
            r.delete(KICK_KEY)
        print(f"webhook ingestion, {n} signed deliveries, SQLite + embedded Redis, one thread")
        for mode, (rate, messages) in results.items():
            print(f"  {mode:26s} {rate:8.0f} deliveries/s   {messages:6d} broker messages")
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)

"""The sandbox's webhook sender: ``{"event_type", "data"}`` with Standard Webhooks headers.

Each event gets one ``webhook-id``; a failed delivery (no answer or a non-2xx) is retried up to
three times with the same id, signed again with the attempt's timestamp. Faults may drop,
duplicate or delay (reorder) deliveries. Every delivery is logged for ``/sandbox/webhooks``.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from typing import Any

import requests

from orchestrator.logs import get_logger
from orchestrator.plural.signatures import webhook_headers
from orchestrator.sandbox.faults import Faults

log = get_logger(__name__)


class WebhookSender:
    def __init__(self, url: str | None, key: bytes, faults: Faults, *, retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0),
                 timeout: float = 5.0, threads: int = 4, log_limit: int = 20000):
        self.url = url
        self.key = key
        self.faults = faults
        self.retry_delays = retry_delays
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._session = requests.Session()
        self._lock = threading.Lock()
        self.deliveries: list[dict[str, Any]] = []
        self._log_limit = log_limit
        self._threads = [threading.Thread(target=self._run, name=f"webhook-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def send(self, event_type: str, data: dict[str, Any]) -> None:
        """Queue an event for delivery (called under the gateway's lock: must not block)."""
        body = json.dumps({"event_type": event_type, "data": data}, separators=(",", ":"))
        record = {"webhook_id": "msg_" + secrets.token_urlsafe(18), "event_type": event_type,
                  "order_id": data.get("order_id"), "status": data.get("status"), "attempts": 0,
                  "outcome": "queued", "body": body}
        with self._lock:
            self.deliveries.append(record)
            del self.deliveries[: max(len(self.deliveries) - self._log_limit, 0)]
        wf = self.faults.webhooks
        if not self.url:
            record["outcome"] = "no_url"
            return
        if self.faults.chance(wf.drop):
            record["outcome"] = "dropped"
            return
        copies = 2 if self.faults.chance(wf.duplicate) else 1
        record["copies"] = copies
        for _ in range(copies):
            if self.faults.chance(wf.reorder):
                record["delayed"] = wf.reorder_delay
                timer = threading.Timer(wf.reorder_delay, self._queue.put, args=(record,))
                timer.daemon = True
                timer.start()
            else:
                self._queue.put(record)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            try:
                self._deliver(record)
            except Exception:  # pragma: no cover - a sender thread must never die
                log.exception("sandbox.webhook.crashed", webhook_id=record["webhook_id"])

    def _deliver(self, record: dict[str, Any]) -> None:
        url = self.url
        for attempt in range(len(self.retry_delays) + 1):
            record["attempts"] += 1
            headers = {"content-type": "application/json",
                       **webhook_headers(self.key, record["webhook_id"], int(time.time()), record["body"])}
            try:
                answer = self._session.post(url, data=record["body"].encode(), headers=headers, timeout=self.timeout)
                record["last_status"] = answer.status_code
                if 200 <= answer.status_code < 300:
                    record["outcome"] = "delivered"
                    return
            except requests.RequestException as exc:
                record["last_status"] = type(exc).__name__
            if attempt < len(self.retry_delays):
                time.sleep(self.retry_delays[attempt])
        record["outcome"] = "failed"
        log.warning("sandbox.webhook.failed", webhook_id=record["webhook_id"], event_type=record["event_type"])

    def view(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{k: v for k, v in r.items() if k != "body"} for r in self.deliveries]

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

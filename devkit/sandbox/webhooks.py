"""The sandbox's webhook sender: ``{"event_type", "data"}`` with Standard Webhooks headers.

Each event gets one ``webhook-id``; a failed delivery (no answer or a non-2xx) is retried with
the same id on Plural's schedule. Plural's documents disagree on it, so both are here
(``SANDBOX_WEBHOOK_SCHEDULE``): ``plural`` retries after 0 s, 5 s, 5 min, 30 min, 2 h, 5 h,
10 h and 10 h; ``three`` retries up to three times (0 s, 5 s, 5 min). The schedule runs
compressed by ``time_scale`` (``SANDBOX_WEBHOOK_TIME_SCALE``, 1.0 = real time) so tests stay
fast. ``webhook-timestamp`` is when the event was triggered (``original``, Plural's description):
a retry keeps it, shifted back by the time the compression skipped, so a retry that Plural would
send hours later carries an hours-old timestamp here too; ``fresh`` signs each attempt with its
own time. Faults may drop, duplicate or delay (reorder) deliveries, or fail every attempt for a
while (an outage: the attempts are retried on the schedule). A delivery whose timestamp was more
than ``LATE_AFTER`` seconds old when it was sent is counted (``late``; a receiver checking
Standard Webhooks' tolerance against its own clock finds it outside). The timestamps are the
machine's time, not the gateway's adjustable clock (``POST /sandbox/clock``), as the receiver
compares them with its own. Every delivery is logged for ``/sandbox/webhooks``.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from typing import Any

import requests
import structlog

from devkit.sandbox.faults import Faults
from devkit.sandbox.signing import webhook_headers

log = structlog.get_logger(__name__)


#: Plural's retry schedules, in seconds after the previous attempt (the documents disagree)
SCHEDULES: dict[str, tuple[float, ...]] = {
    "plural": (0, 5, 300, 1800, 7200, 18000, 36000, 36000),
    "three": (0, 5, 300),
}
TIMESTAMPS = ("original", "fresh")
#: Standard Webhooks' tolerance: a timestamp older than this is outside it at the receiver
LATE_AFTER = 300


class WebhookSender:
    def __init__(self, url: str | None, key: bytes, faults: Faults, *, schedule: str = "plural",
                 time_scale: float = 1.0, timestamps: str = "original", timeout: float = 5.0, threads: int = 4,
                 log_limit: int = 20000):
        if schedule not in SCHEDULES or timestamps not in TIMESTAMPS or time_scale < 0:
            raise ValueError(f"schedule is one of {sorted(SCHEDULES)}, timestamps one of {TIMESTAMPS}, "
                             "time_scale >= 0")
        self.url = url
        self.key = key
        self.faults = faults
        self.schedule, self.time_scale, self.timestamps = schedule, time_scale, timestamps
        self.timeout = timeout
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._session = requests.Session()
        self._lock = threading.Lock()
        self.deliveries: list[dict[str, Any]] = []
        self.late = 0  # deliveries answered 2xx whose timestamp was more than LATE_AFTER s old
        self._log_limit = log_limit
        self._threads = [threading.Thread(target=self._run, name=f"webhook-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def send(self, event_type: str, data: dict[str, Any]) -> None:
        """Queue an event for delivery (called under the gateway's lock: must not block)."""
        body = json.dumps({"event_type": event_type, "data": data}, separators=(",", ":"))
        record = {"webhook_id": "msg_" + secrets.token_urlsafe(18), "event_type": event_type,
                  "order_id": data.get("order_id"), "status": data.get("status"), "attempts": 0,
                  "outcome": "queued", "body": body, "triggered_at": time.time()}
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

    @property
    def retry_delays(self) -> tuple[float, ...]:
        """The schedule's waits as this sender sleeps them (compressed by ``time_scale``)."""
        return tuple(d * self.time_scale for d in SCHEDULES[self.schedule])

    def _timestamp(self, record: dict[str, Any], attempt: int) -> int:
        """The attempt's ``webhook-timestamp``: its own time (``fresh``), or the event's, moved back
        by the part of the schedule the compression skipped (``original``)."""
        if self.timestamps == "fresh":
            return int(time.time())
        skipped = sum(SCHEDULES[self.schedule][:attempt]) * (1 - self.time_scale)
        return int(record["triggered_at"] - skipped)

    def _deliver(self, record: dict[str, Any]) -> None:
        """One attempt; a failed one is queued again when the schedule says (a timer, so a
        receiver that is down holds no sender thread for hours)."""
        attempt = record["attempts"]
        record["attempts"] += 1
        stamp = self._timestamp(record, attempt)
        record["last_timestamp"] = stamp
        headers = {"content-type": "application/json",
                   **webhook_headers(self.key, record["webhook_id"], stamp, record["body"])}
        try:
            if self.faults.in_outage():
                raise requests.ConnectionError("injected webhook outage")
            answer = self._session.post(self.url, data=record["body"].encode(), headers=headers, timeout=self.timeout)
            record["last_status"] = answer.status_code
            if 200 <= answer.status_code < 300:
                record["outcome"] = "delivered"
                if time.time() - stamp > LATE_AFTER:
                    record["late"] = True
                    with self._lock:
                        self.late += 1
                return
        except requests.RequestException as exc:
            record["last_status"] = type(exc).__name__
        delays = self.retry_delays
        if attempt < len(delays):
            record["outcome"] = "retrying"
            timer = threading.Timer(delays[attempt], self._queue.put, args=(record,))
            timer.daemon = True
            timer.start()
            return
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

"""Faults the sandbox can inject, set at start or through ``/sandbox/faults``.

A rule matches calls by method and a path regex and does one thing:

- ``latency``: wait ``seconds`` before handling the call;
- ``error``: answer one of ``statuses`` (500, 503, 429, ...) without handling the call;
- ``hang_before``: wait ``seconds`` (longer than the client's timeout), then answer 504 unhandled;
- ``hang_after``: handle the call, then wait ``seconds`` before answering: the client times out
  although Plural acted (the unknown outcome).
- ``drop_answer``: handle the call, then answer one of ``statuses`` instead of its answer (a
  proxy or a connection that lost Plural's answer): a call that did succeed looks failed, so the
  caller's retry meets its own reference (``DUPLICATE_REQUEST``) and must find what it made.

``probability`` makes a rule random, ``count`` limits how many times it fires; ``fired`` counts
the firings of each kind since the sandbox started. Webhook faults drop, duplicate or delay
(reorder) a share of deliveries; ``outage`` (seconds) makes every delivery attempt fail for that
long from when it is set (the merchant's endpoint unreachable), so events are retried on the
schedule afterwards, late and with their original timestamps. An outage runs its course when
other faults replace it (only ``DELETE /sandbox/faults`` ends it early).
"""

from __future__ import annotations

import collections
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("latency", "error", "hang_before", "hang_after", "drop_answer")


@dataclass
class FaultRule:
    kind: str
    path: str = ".*"
    method: str | None = None
    statuses: list[int] = field(default_factory=lambda: [503])
    seconds: float = 0.0
    probability: float = 1.0
    count: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if not 0 <= self.probability <= 1:
            raise ValueError("probability must be between 0 and 1")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")
        if not self.statuses or any(not 400 <= s <= 599 for s in self.statuses):
            raise ValueError("statuses must be HTTP error statuses")
        re.compile(self.path)


@dataclass
class WebhookFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 1.0
    #: seconds from now during which every delivery attempt fails (retried on the schedule)
    outage: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if not 0 <= self.outage <= 86400:
            raise ValueError("outage must be between 0 and 86400 seconds")


class Faults:
    def __init__(self, rules: list[FaultRule] | None = None, webhooks: WebhookFaults | None = None,
                 seed: int | None = None):
        self._lock = threading.Lock()
        self.rules = list(rules or [])
        self.webhooks = webhooks or WebhookFaults()
        self.rng = random.Random(seed)
        self.fired: collections.Counter[str] = collections.Counter()
        self.outage_until = 0.0
        if self.webhooks.outage:
            self.outage_until = time.time() + self.webhooks.outage

    def match(self, method: str, path: str) -> list[FaultRule]:
        """The rules that fire for this call (counts are used up)."""
        fired = []
        with self._lock:
            for rule in self.rules:
                if rule.method and rule.method.upper() != method.upper():
                    continue
                if not re.search(rule.path, path):
                    continue
                if rule.count is not None and rule.count <= 0:
                    continue
                if self.rng.random() >= rule.probability:
                    continue
                if rule.count is not None:
                    rule.count -= 1
                self.fired[rule.kind] += 1
                fired.append(rule)
        return fired

    def in_outage(self) -> bool:
        """Is a webhook outage under way (every delivery attempt fails)?"""
        with self._lock:
            return time.time() < self.outage_until

    def chance(self, share: float) -> bool:
        with self._lock:
            return share > 0 and self.rng.random() < share

    def pick(self, options: list[int]) -> int:
        with self._lock:
            return self.rng.choice(options)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": [asdict(r) for r in self.rules], "webhooks": asdict(self.webhooks),
                    "outage_left": round(max(self.outage_until - time.time(), 0.0), 3), "fired": dict(self.fired)}

    def replace(self, data: dict[str, Any]) -> None:
        rules = [FaultRule(**r) for r in data.get("rules") or []]
        webhooks = WebhookFaults(**(data.get("webhooks") or {}))
        with self._lock:
            self.rules = rules
            self.webhooks = webhooks
            if webhooks.outage:
                self.outage_until = time.time() + webhooks.outage

    def clear(self) -> None:
        with self._lock:
            self.rules = []
            self.webhooks = WebhookFaults()
            self.outage_until = 0.0


def simple_faults(*, latency_ms: float = 0, error_rate: float = 0, timeout_rate: float = 0,
                  timeout_seconds: float = 35.0, webhook_drop: float = 0, webhook_duplicate: float = 0,
                  webhook_reorder: float = 0, seed: int | None = None) -> Faults:
    """The command line's faults: the same for every Plural path."""
    rules = []
    if latency_ms:
        rules.append(FaultRule("latency", seconds=latency_ms / 1000))
    if error_rate:
        rules.append(FaultRule("error", statuses=[500, 503, 429], probability=error_rate))
    if timeout_rate:
        rules.append(FaultRule("hang_after", seconds=timeout_seconds, probability=timeout_rate))
    return Faults(rules, WebhookFaults(webhook_drop, webhook_duplicate, webhook_reorder), seed=seed)

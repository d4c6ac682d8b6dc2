"""Prometheus metrics (``prometheus-client``), from the API and the workers.

Two kinds:

- what happens in a process, counted where it happens: step latency by step, gateway calls by
  endpoint and outcome (and their latency), claims lost, webhooks received by result, event
  delivery attempts by outcome, checkouts created. With ``PROMETHEUS_MULTIPROC_DIR`` set (``up``
  and the test stacks set it to ``$DATA_DIR/metrics``) every process writes its own file there and
  the API's ``/metrics`` adds them up (prometheus-client's multiprocess mode);
- what the store says, read at scrape time: checkouts by status and method, overdue checkouts and
  the age of the oldest (the sweep's lag), the event backlog and its oldest pending event,
  webhooks by status, and whether Plural refuses our client credentials (the token store's flag,
  in Redis). One source of truth, whichever process answers.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from typing import Any, Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

STEP_SECONDS = Histogram("orchestrator_step_seconds", "One run of a saga step, claim to release", ["step"],
                         buckets=LATENCY)
GATEWAY_CALLS = Counter("orchestrator_gateway_calls_total", "Calls to Plural by endpoint and outcome",
                        ["endpoint", "outcome"])
GATEWAY_SECONDS = Histogram("orchestrator_gateway_call_seconds", "Calls to Plural, retries included", ["endpoint"],
                            buckets=LATENCY)
CLAIMS_LOST = Counter("orchestrator_claims_lost_total", "Runs that stopped because another run held the checkout",
                      ["step"])
WEBHOOKS = Counter("orchestrator_webhooks_received_total", "Plural's webhooks by result", ["result"])
EVENT_ATTEMPTS = Counter("orchestrator_event_delivery_attempts_total", "Deliveries of events to the merchant",
                         ["outcome"])
CHECKOUTS_CREATED = Counter("orchestrator_checkouts_created_total", "Checkouts received", ["method"])

_ID = re.compile(r"\d")


def endpoint(method: str, path: str) -> str:
    """A call's endpoint without its ids (``POST /api/pay/v1/orders/{id}/payments``), so labels stay few."""
    parts = [p if not _ID.search(p) or p in ("v1", "v2", "v3") else "{id}" for p in path.split("?")[0].split("/")]
    return f"{method} {'/'.join(parts)}"


def observe_gateway(method: str, path: str, outcome: str, seconds: float) -> None:
    name = endpoint(method, path)
    GATEWAY_CALLS.labels(name, outcome).inc()
    GATEWAY_SECONDS.labels(name).observe(seconds)


class StoreCollector:
    """Gauges read from the store at scrape time (``overview``: the operator's overview)."""

    def __init__(self, overview: Callable[[], dict[str, Any]]):
        self.overview = overview

    def collect(self) -> Iterator[GaugeMetricFamily]:
        o = self.overview()
        yield GaugeMetricFamily("orchestrator_plural_credentials_rejected",
                                "1 while Plural refuses our client credentials (a configuration fault: checkouts wait)",
                                value=1 if o["credentials"]["rejected"] else 0)
        yield GaugeMetricFamily("orchestrator_plural_credentials_rejected_seconds",
                                "How long Plural has refused our client credentials (0 while accepted)",
                                value=o["credentials"]["seconds"] or 0)
        checkouts = GaugeMetricFamily("orchestrator_checkouts", "Checkouts by public status and payment method",
                                      labels=["status", "method"])
        for (status, method), count in o["by_status_and_method"].items():
            checkouts.add_metric([status, method], count)
        yield checkouts
        yield GaugeMetricFamily("orchestrator_overdue_checkouts", "Checkouts whose due time passed a minute ago",
                                value=o["overdue"]["count"])
        oldest = o["overdue"]["oldest"]
        yield GaugeMetricFamily("orchestrator_oldest_overdue_seconds", "How late the most overdue checkout is "
                                "(the sweep's lag)", value=oldest[0]["late_seconds"] if oldest else 0)
        yield GaugeMetricFamily("orchestrator_needs_attention", "Checkouts a person must look at",
                                value=o["by_status"].get("NEEDS_ATTENTION", 0))
        backlog = GaugeMetricFamily("orchestrator_events", "Events to the merchant by delivery status",
                                    labels=["status"])
        for status in ("pending", "delivered", "failed"):
            backlog.add_metric([status], o["events"][status])
        yield backlog
        yield GaugeMetricFamily("orchestrator_oldest_pending_event_seconds", "Age of the oldest undelivered event",
                                value=o["events"]["oldest_pending_seconds"] or 0)
        hooks = GaugeMetricFamily("orchestrator_webhook_events", "Plural's webhooks by processing status",
                                  labels=["status"])
        for status, count in sorted(o["webhooks"].items()):
            hooks.add_metric([status], count)
        yield hooks


def render(overview: Callable[[], dict[str, Any]]) -> tuple[bytes, str]:
    """The text a scrape gets: every process's counters (added up in multiprocess mode) and the
    store's gauges, from ``overview`` (the operator's overview, with the token store's
    "credentials rejected" flag)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)
        text = generate_latest(counted)
    else:
        from prometheus_client import REGISTRY

        text = generate_latest(REGISTRY)
    store = CollectorRegistry()
    store.register(StoreCollector(overview))
    return text + generate_latest(store), CONTENT_TYPE_LATEST

"""End to end: a checkout's events reach a real receiving HTTP server, signed and in order, from
real processes; across a receiver that answers 500 then 200, a receiver that is down for longer
than the first retries, and a worker killed mid-delivery."""

from __future__ import annotations

import signal
import time
import uuid

import pytest

from orchestrator.outbound import delivery
from devkit.merchant_client import OrchestratorClient
from devkit.redis_server import free_port
from tests.e2e.test_checkout_e2e import card, client_for, make_stack
from tests.receiver import Receiver

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + "ZTJlLW1lcmNoYW50LXNlY3JldA=="
BACKOFF = (1.0, 3.0, 6.0)  # seconds, for the suite: the default starts at 5 s, 30 s, 2 min
EVENTS_ENV = {"MERCHANT_WEBHOOK_SECRET": SECRET, "MERCHANT_EVENT_BACKOFF": ",".join(map(str, BACKOFF))}
ALL = ["checkout.awaiting_otp", "checkout.processing", "checkout.completed"]


def pay(api: OrchestratorClient) -> str:
    c = api.create_checkout(amount=25000, card=card(), merchant_order_reference=f"ev-{uuid.uuid4().hex[:12]}")
    c = api.wait(c["id"], {"AWAITING_OTP"}, timeout=30, current=c)
    done = api.wait(c["id"], {"COMPLETED"}, timeout=30, current=api.submit_otp(c["id"], "123456"))
    return done["id"]


def of(rx: Receiver, checkout_id: str) -> list[dict]:
    return [e for e in rx.delivered() if e["data"].get("id") == checkout_id or e["data"].get("checkout_id") == checkout_id]


def wait_events(rx: Receiver, checkout_id: str, count: int, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(of(rx, checkout_id)) >= count:
            return of(rx, checkout_id)
        time.sleep(0.1)
    raise AssertionError(f"{of(rx, checkout_id)} of {checkout_id}; hits: {[h['status'] for h in rx.hits]}")


def test_events_reach_the_shop_signed_in_order_across_500s_and_an_outage(tmp_path):
    with Receiver(answers=[500]) as rx:
        with make_stack(tmp_path, MERCHANT_WEBHOOK_URL=rx.url, **EVENTS_ENV) as stack:
            api = client_for(stack)
            first = pay(api)
            got = wait_events(rx, first, 3, timeout=BACKOFF[0] + 30)
            assert [e["type"] for e in got] == ALL
            assert rx.hits[0]["status"] == 500 and rx.hits[1]["headers"]["webhook-id"] == rx.hits[0]["headers"]["webhook-id"]
            for hit in rx.hits:
                event = OrchestratorClient.verify_event(SECRET, hit["headers"], hit["body"])
                assert event["id"] == hit["headers"]["webhook-id"]
            assert got[-1]["data"]["status"] == "COMPLETED" and got[-1]["data"]["history"]
            pulled = api.events(type="checkout.completed")["events"]
            assert [e["id"] for e in pulled if e["data"]["id"] == first] == [got[-1]["id"]]
            assert pulled[-1]["delivery"]["status"] == "delivered"


def test_a_worker_killed_mid_delivery_delivers_again_with_the_same_event_id(tmp_path):
    with Receiver(delay=4.0) as rx:
        env = dict(MERCHANT_WEBHOOK_URL=rx.url, MERCHANT_WEBHOOK_TIMEOUT="2", **EVENTS_ENV)
        with make_stack(tmp_path, **env) as stack:
            api = client_for(stack)
            c = api.create_checkout(amount=26000, card=card(), merchant_order_reference=f"ev-{uuid.uuid4().hex[:12]}")
            api.wait(c["id"], {"AWAITING_OTP"}, timeout=30, current=c)
            deadline = time.monotonic() + 20
            while not rx.hits and time.monotonic() < deadline:  # the first delivery is in flight
                time.sleep(0.05)
            assert rx.hits
            stack.kill("worker", signal.SIGKILL)
            rx.delay = 0.0
            stack.restart("worker")
            deadline = time.monotonic() + 60
            first_id = rx.hits[0]["headers"]["webhook-id"]
            while time.monotonic() < deadline and sum(h["headers"]["webhook-id"] == first_id for h in rx.hits) < 2:
                time.sleep(0.2)
            assert sum(h["headers"]["webhook-id"] == first_id for h in rx.hits) >= 2
            pulled = api.events()["events"]
            mine = [e for e in pulled if e["id"] == first_id]
            deadline = time.monotonic() + 20
            while mine[0]["delivery"]["status"] != "delivered" and time.monotonic() < deadline:
                time.sleep(0.2)
                mine = [e for e in api.events()["events"] if e["id"] == first_id]
            assert mine[0]["delivery"]["status"] == "delivered"


def test_a_receiver_down_longer_than_the_first_retries_gets_every_event_later(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/events"
    with make_stack(tmp_path, MERCHANT_WEBHOOK_URL=url, **EVENTS_ENV) as stack:
        api = client_for(stack)
        paid = pay(api)
        time.sleep(BACKOFF[0] + 1.5)  # the first attempt and its first retry find nobody
        pulled = [e for e in api.events()["events"] if e["data"].get("id") == paid]
        tried = pulled[0]["delivery"]["attempts"] if pulled else 0
        assert tried >= 2 and pulled[0]["delivery"]["status"] == "pending"
        with Receiver(port=port) as rx:  # the shop is back: the next retry, after its backoff, reaches it
            got = wait_events(rx, paid, 3, timeout=delivery.next_delay(tried, BACKOFF) + 30)
        assert [e["type"] for e in got] == ALL

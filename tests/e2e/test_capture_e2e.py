"""Capture after delivery, hold expiry, refunds and re-drives over a real Redis, worker and beat."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import signal
import time
import uuid

import pytest
import redis
import requests

from devkit.merchant_client import OrchestratorError
from tests.e2e.test_checkout_e2e import card, client_for, make_stack

pytestmark = pytest.mark.e2e

HOLD_SECONDS = 12.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # a hold lasts HOLD_SECONDS here, so that an undelivered one expires within the test
    # and a call to Plural is given up after 2 s without retrying, so that a slow answer is an unknown outcome
    with make_stack(tmp_path_factory.mktemp("capture"), HOLD_DAYS=str(HOLD_SECONDS / 86400),
                    HOLD_MARGIN_SECONDS="0", HTTP_READ_TIMEOUT="2", HTTP_MAX_ATTEMPTS="1") as s:
        yield s


@pytest.fixture(scope="module")
def api(stack):
    return client_for(stack)


def authorized(api, amount=5000, pre_auth=True):
    c = api.create_checkout(amount=amount, card=card(), pre_auth=pre_auth,
                            merchant_order_reference=f"cap-{uuid.uuid4().hex[:12]}")
    api.wait(c["id"], {"AWAITING_OTP"}, timeout=30)
    api.submit_otp(c["id"], "123456")
    return api.wait(c["id"], {"AUTHORIZED", "COMPLETED"}, timeout=30)


def deliver(api, checkout_id, amount=None):
    body = {"capture_amount": {"value": amount, "currency": "INR"}} if amount else None
    return api._call("POST", f"/v1/checkouts/{checkout_id}/delivery", body)


def refund(api, checkout_id, amount=None, reference=None):
    body = {}
    if amount:
        body["amount"] = {"value": amount, "currency": "INR"}
    if reference:
        body["merchant_refund_reference"] = reference
    return api._call("POST", f"/v1/checkouts/{checkout_id}/refunds", body)


def captures(stack, order_id):
    entries = requests.get(f"{stack.sandbox_url}/sandbox/ledger", timeout=5).json()["entries"]
    return [e["amount"]["value"] for e in entries if e["order_id"] == order_id and e["kind"] == "CAPTURED"]


def test_delivery_captures_once_and_a_second_delivery_changes_nothing(api, stack):
    c = authorized(api)
    assert deliver(api, c["id"])["status"] in ("CAPTURING", "COMPLETED")
    done = api.wait(c["id"], {"COMPLETED"}, timeout=30)
    assert deliver(api, c["id"])["status"] == "COMPLETED"
    assert done["captured_amount"]["value"] == 5000 and captures(stack, done["plural_order_id"]) == [5000]


def test_partial_capture_and_the_refused_over_capture(api, stack):
    c = authorized(api)
    with pytest.raises(OrchestratorError) as exc:
        deliver(api, c["id"], 5001)
    assert exc.value.status == 422 and exc.value.code == "CAPTURE_EXCEEDS_AUTHORIZED"
    deliver(api, c["id"], 2000)
    done = api.wait(c["id"], {"COMPLETED"}, timeout=30)
    assert done["captured_amount"]["value"] == 2000 and captures(stack, done["plural_order_id"]) == [2000]


def test_an_undelivered_hold_expires(api, stack):
    c = authorized(api)
    done = api.wait(c["id"], {"EXPIRED", "CANCELLED", "COMPLETED"}, timeout=HOLD_SECONDS + 20)
    assert done["status"] == "EXPIRED" and done["cancel_reason"] == "HOLD_EXPIRED"


def test_refunds_full_partial_and_over_refund(api, stack):
    c = authorized(api, amount=10000, pre_auth=False)
    first = refund(api, c["id"], 3000, reference=f"rf-{uuid.uuid4().hex[:10]}")
    assert refund(api, c["id"], 3000, reference=first["merchant_refund_reference"])["id"] == first["id"]
    with pytest.raises(OrchestratorError) as exc:
        refund(api, c["id"], 7001)
    assert exc.value.status == 422 and exc.value.code == "REFUND_EXCEEDS_CAPTURED"
    rest = refund(api, c["id"])
    assert rest["amount"]["value"] == 7000
    deadline = time.time() + 30
    while time.time() < deadline:
        view = api.get_checkout(c["id"])
        if view["refunded_amount"]["value"] == 10000:
            break
        time.sleep(0.2)
    assert {r["status"] for r in view["refunds"]} == {"PROCESSED"}
    assert view["refunded_amount"]["value"] == 10000


def test_a_capture_message_lost_with_redis_flushed_is_re_driven(api, stack):
    c = authorized(api)
    stack.kill("worker", signal.SIGKILL)
    deliver(api, c["id"])
    redis.Redis.from_url(stack.redis_url).flushall()
    stack.restart("worker")
    done = api.wait(c["id"], {"COMPLETED"}, timeout=40)
    assert captures(stack, done["plural_order_id"]) == [5000]
    assert "delivered" in " ".join(h["reason"] for h in done["history"])


def test_two_beats_by_mistake_still_capture_each_hold_once(api, stack, tmp_path):
    stack.spawn("beat2", command="beat", env={"DATA_DIR": str(tmp_path)})
    try:
        with cf.ThreadPoolExecutor(6) as pool:
            held = list(pool.map(lambda i: authorized(api, amount=1000 + i), range(6)))
        stack.kill("worker", signal.SIGKILL)
        for c in held:
            deliver(api, c["id"])
        redis.Redis.from_url(stack.redis_url).delete("saga")  # every capture message is lost
        stack.restart("worker")
        final = [api.wait(c["id"], {"COMPLETED"}, timeout=40) for c in held]
    finally:
        stack.kill("beat2", signal.SIGTERM)
    counted = collections.Counter()
    for c in final:
        counted[len(captures(stack, c["plural_order_id"]))] += 1
    assert counted == {1: 6}


def test_a_capture_that_times_out_is_reconciled_and_captured_once(api, stack):
    c = authorized(api)
    # the answer never comes in time and no webhook tells: only asking Get Order can settle it
    requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "/capture$", "seconds": 3, "count": 1}], "webhooks": {"drop": 1.0}},
        timeout=5)
    try:
        deliver(api, c["id"])
        done = api.wait(c["id"], {"COMPLETED"}, timeout=40)
    finally:
        requests.delete(f"{stack.sandbox_url}/sandbox/faults", timeout=5)
    assert captures(stack, done["plural_order_id"]) == [5000]
    assert "capture found at Plural" in " ".join(h["reason"] for h in done["history"])

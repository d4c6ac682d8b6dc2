"""Webhooks and return-URL callbacks end to end: the sandbox posts real webhooks to the real API;
polling is slowed to a minute here so that only a webhook or a callback can settle a checkout."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests

from devkit.demo import approve_on_bank_page
from orchestrator.plural.signatures import webhook_headers
from tests.e2e.test_checkout_e2e import ACS_CARD, client_for, make_stack, new

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def slow_poll_stack(tmp_path_factory):
    with make_stack(tmp_path_factory.mktemp("webhooks"), POLL_SCHEDULE="60") as s:
        yield s


@pytest.fixture
def stack(slow_poll_stack):
    requests.delete(f"{slow_poll_stack.sandbox_url}/sandbox/faults", timeout=5)
    yield slow_poll_stack
    requests.delete(f"{slow_poll_stack.sandbox_url}/sandbox/faults", timeout=5)


def into(checkout, state):
    return [h for h in checkout["history"] if h["to"] == state]


def test_a_real_webhook_settles_the_checkout(stack):
    api = client_for(stack)
    c = new(api, ACS_CARD)
    approve_on_bank_page(c["next_action"]["url"])
    done = api.wait(c["id"], timeout=20)
    assert done["status"] == "COMPLETED"
    assert into(done, "COMPLETED")[0]["reason"].startswith("webhook ORDER_PROCESSED")


def test_duplicated_and_reordered_webhooks_settle_each_checkout_once(stack):
    requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"webhooks": {
        "duplicate": 1.0, "reorder": 0.5, "reorder_delay": 0.4}}, timeout=5)
    api = client_for(stack)
    started = [new(api, ACS_CARD) for _ in range(6)]
    for i, c in enumerate(started):
        approve_on_bank_page(c["next_action"]["url"], approve=i % 3 != 0)
    final = [api.wait(c["id"], timeout=20) for c in started]
    assert [c["status"] for c in final] == ["FAILED", "COMPLETED", "COMPLETED"] * 2
    for c in final:
        assert len(into(c, c["status"])) == 1
    deliveries = requests.get(f"{stack.sandbox_url}/sandbox/webhooks", timeout=5).json()["deliveries"]
    mine = [d for d in deliveries if d["order_id"] in {c["plural_order_id"] for c in final}]
    assert mine and all(d.get("copies") == 2 for d in mine)


def test_the_return_url_settles_the_checkout_when_webhooks_are_lost(stack):
    requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"webhooks": {"drop": 1.0}}, timeout=5)
    api = client_for(stack)
    c = api.create_checkout(amount=4200, card={"number": ACS_CARD, "name": "K", "cvv": "123", "expiry_month": "12",
                                                "expiry_year": "2030"},
                            merchant_order_reference=f"cb-{uuid.uuid4().hex[:12]}",
                            callback_url="https://shop.test/thanks")
    c = api.wait(c["id"], {"AWAITING_REDIRECT"}, timeout=30)
    page = urlparse(c["next_action"]["url"])
    token = page.query.split("token=")[1]
    bank = requests.post(f"{page.scheme}://{page.netloc}{page.path}/approve", data={"token": token},
                         allow_redirects=False, timeout=5)
    back_to_us = bank.headers["location"]
    assert back_to_us.startswith(stack.api_url + "/callbacks/plural?")
    to_merchant = requests.get(back_to_us, allow_redirects=False, timeout=5)
    assert to_merchant.status_code == 303 and to_merchant.headers["location"].startswith("https://shop.test/thanks?")
    done = api.wait(c["id"], timeout=20)
    assert done["status"] == "COMPLETED" and into(done, "COMPLETED")[0]["reason"].startswith("polled")


def test_a_forged_webhook_is_refused_by_the_running_api(stack):
    body = json.dumps({"event_type": "ORDER_PROCESSED", "data": {"order_id": "v1-x"}}).encode()
    headers = webhook_headers(b"wrong-secret", "msg_forged", int(time.time()), body)
    answer = requests.post(f"{stack.api_url}/webhooks/plural", data=body, headers=headers, timeout=5)
    assert answer.status_code == 401


def test_a_late_retry_with_its_original_timestamp_is_kept_not_refused(stack):
    """Plural retries for hours; a signed delivery older than the tolerance is acknowledged (and
    applied only through Get Order), so a late retry is never lost."""
    from config import Settings

    body = json.dumps({"event_type": "ORDER_PROCESSED", "data": {"order_id": "v1-x"}}).encode()
    headers = webhook_headers(Settings().webhook_key(), f"msg_late_{uuid.uuid4().hex}", int(time.time()) - 400, body)
    answer = requests.post(f"{stack.api_url}/webhooks/plural", data=body, headers=headers, timeout=5)
    assert answer.status_code == 200 and answer.json()["duplicate"] is False


def test_a_tampered_callback_changes_nothing(stack):
    requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"webhooks": {"drop": 1.0}}, timeout=5)
    api = client_for(stack)
    c = new(api, ACS_CARD)
    page = urlparse(c["next_action"]["url"])
    token = page.query.split("token=")[1]
    bank = requests.post(f"{page.scheme}://{page.netloc}{page.path}/decline", data={"token": token},
                         allow_redirects=False, timeout=5)
    forged = bank.headers["location"].replace("status=FAILED", "status=AUTHORIZED")
    answer = requests.get(forged, allow_redirects=False, timeout=5)
    assert answer.status_code == 400 and "nothing was changed" in answer.text
    time.sleep(1.0)
    assert api.get_checkout(c["id"])["status"] == "AWAITING_REDIRECT"  # no hint, slow polls: still waiting

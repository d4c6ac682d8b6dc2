"""Over the real stack (Redis, workers, beat, API, sandbox as processes): Plural refusing our
client credentials (a rotated secret) leaves checkouts waiting, not FAILED; /metrics shows it at
once; once the credentials work again the checkouts go on by themselves and complete."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.e2e.test_checkout_e2e import card, client_for, make_stack

pytestmark = pytest.mark.e2e


def gauge(stack) -> str:
    text = requests.get(stack.api_url + "/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith("orchestrator_plural_credentials_rejected ")][0]


def until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition never held")


@pytest.mark.timeout(300)
def test_checkouts_wait_through_a_credentials_refusal_and_complete_once_it_ends(tmp_path):
    with make_stack(tmp_path, CREDENTIALS_RETRY_SECONDS="0.5") as stack:
        api = client_for(stack)
        assert gauge(stack) == "orchestrator_plural_credentials_rejected 0.0"
        requests.post(f"{stack.sandbox_url}/sandbox/tokens/refuse", json={}, timeout=5).raise_for_status()
        ids = [api.create_checkout(amount=20000 + i, card=card(), merchant_order_reference=f"cred-{uuid.uuid4().hex[:12]}")
               ["id"] for i in range(4)]
        views = until(lambda: (lambda vs: vs if all((v.get("error") or {}).get("code") == "CREDENTIALS_REJECTED"
                                                     for v in vs) else None)([api.get_checkout(i) for i in ids]))
        assert all(v["status"] != "FAILED" for v in views)
        until(lambda: gauge(stack) == "orchestrator_plural_credentials_rejected 1.0")
        time.sleep(3)  # several retries meet the refusal: still nothing FAILED
        assert all(api.get_checkout(i)["status"] != "FAILED" for i in ids)
        requests.delete(f"{stack.sandbox_url}/sandbox/tokens/refuse", timeout=5).raise_for_status()
        for i in ids:
            assert api.wait(i, {"AWAITING_OTP", "FAILED", "COMPLETED", "CANCELLED"}, timeout=60)["status"] == "AWAITING_OTP"
            api.submit_otp(i, "123456")
        for i in ids:
            assert api.wait(i, timeout=60)["status"] == "COMPLETED"
        until(lambda: gauge(stack) == "orchestrator_plural_credentials_rejected 0.0")

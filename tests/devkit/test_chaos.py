"""The chaos run's new faults, each on its own (the full run is tests/e2e/test_chaos_e2e.py)."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import pytest
import requests

from devkit import chaos


@pytest.mark.parametrize("method, path, lost", [
    ("POST", "/api/pay/v1/orders", True),
    ("POST", "/api/pay/v1/orders/v1-1-aa-x/payments", True),
    ("PUT", "/api/pay/v1/orders/v1-1-aa-x/capture", True),
    ("POST", "/api/pay/v1/refunds/v1-1-aa-x", True),
    ("GET", "/api/pay/v1/orders/v1-1-aa-x", False),
    ("GET", "/api/pay/v1/orders/reference/ord-1", False),
    ("PUT", "/api/pay/v1/orders/v1-1-aa-x/cancel", False),
    ("POST", "/api/pay/v1/otp/submit", False),
])
def test_answers_are_lost_only_for_the_calls_that_carry_our_reference(method, path, lost):
    assert bool(re.search(chaos.REFERENCED_CALLS, path)) is lost


def test_a_run_starts_by_losing_answers_then_taking_the_webhook_receiver_away(sandbox):
    run = chaos.Chaos(SimpleNamespace(sandbox_url=sandbox.url), random.Random(1), period=1.0)
    run.one()
    faults = requests.get(sandbox.url + "/sandbox/faults", timeout=5).json()
    assert [(r["kind"], r["path"]) for r in faults["rules"]] == [("drop_answer", chaos.REFERENCED_CALLS)]
    run.one()
    faults = requests.get(sandbox.url + "/sandbox/faults", timeout=5).json()
    assert faults["rules"] == [] and 0 < faults["outage_left"] <= 8
    assert run.injected == {"duplicates": 1, "late_webhooks": 1}


@pytest.mark.parametrize("view, outcome", [
    ({"status": "FAILED", "error": {"code": "PAYMENT_EXPIRED", "message": "…"}}, "expired"),
    ({"status": "CANCELLED", "error": None}, "cancelled"),
    ({"status": "CANCELLED", "finished_late": True}, None),
    ({"status": "FAILED", "error": {"code": "PAYMENT_DECLINED", "message": "…"}}, None),
    ({"status": "COMPLETED", "error": None}, None),
])
def test_a_checkout_left_to_expire_ends_expired_or_cancelled_and_nothing_else(view, outcome):
    assert chaos.expiry_outcome(view) == outcome

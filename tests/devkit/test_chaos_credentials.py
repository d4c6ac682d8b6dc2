"""Chaos's credentials fault: Plural refuses our client credentials for a few seconds, then
accepts them by itself; a checkout FAILED by such a refusal is counted against the run."""

from __future__ import annotations

import random

import requests

from config.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET
from devkit.chaos import Report, failed_by_credentials, refuse_credentials


def token_status(base):
    return requests.post(base + "/api/auth/v1/token", json={
        "client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET,
        "grant_type": "client_credentials"}, timeout=5).status_code


def test_the_fault_refuses_the_credentials_for_a_few_seconds_then_they_work(sandbox):
    seconds = refuse_credentials(sandbox.url, random.Random(1))
    assert 2 <= seconds <= 10
    assert token_status(sandbox.url) == 422
    requests.post(sandbox.url + "/sandbox/clock", json={"advance": seconds + 0.1}, timeout=5).raise_for_status()
    assert token_status(sandbox.url) == 200


def test_a_checkout_failed_by_a_token_refusal_fails_the_run():
    assert failed_by_credentials({"status": "FAILED", "error": {"code": "UNAUTHORIZED"}})
    assert failed_by_credentials({"status": "FAILED", "error": {"code": "CREDENTIALS_REJECTED"}})
    assert not failed_by_credentials({"status": "FAILED", "error": {"code": "PAYMENT_DECLINED"}})
    assert not failed_by_credentials({"status": "COMPLETED", "error": {"code": "CREDENTIALS_REJECTED"}})
    assert not Report(credentials_failed=1).ok and Report().ok

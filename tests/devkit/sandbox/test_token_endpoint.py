"""The sandbox's Generate Token answers as Plural's reference says: 200 with ``access_token`` and
``expires_at``, 422 for credentials it does not accept; and it can refuse them for a while."""

from __future__ import annotations

import datetime as dt

import requests

from config.settings import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET


def token(base, secret=SANDBOX_CLIENT_SECRET, grant_type="client_credentials"):
    return requests.post(base + "/api/auth/v1/token", json={
        "client_id": SANDBOX_CLIENT_ID, "client_secret": secret, "grant_type": grant_type}, timeout=5)


def test_a_token_comes_with_an_iso_expires_at(sandbox):
    answer = token(sandbox.url)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_at"}
    assert body["expires_at"].endswith("Z")
    at = dt.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    left = (at - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 3500 < left <= 3600


def test_a_wrong_secret_is_422_with_plurals_error_body(sandbox):
    answer = token(sandbox.url, secret="rotated")
    assert answer.status_code == 422
    assert answer.json() == {"code": "UNAUTHORIZED", "message": "invalid client credentials"}


def test_a_wrong_grant_type_is_422_not_an_undocumented_400(sandbox):
    answer = token(sandbox.url, grant_type="password")
    assert answer.status_code == 422 and answer.json()["code"] == "INVALID_REQUEST"


def test_refused_credentials_void_issued_tokens_and_are_422_until_accepted(sandbox):
    issued = token(sandbox.url).json()["access_token"]
    requests.post(sandbox.url + "/sandbox/tokens/refuse", json={}, timeout=5).raise_for_status()
    order = requests.get(sandbox.url + "/api/pay/v1/orders/x", headers={"Authorization": f"Bearer {issued}"},
                         timeout=5)
    assert order.status_code == 401
    assert token(sandbox.url).status_code == 422
    requests.delete(sandbox.url + "/sandbox/tokens/refuse", timeout=5).raise_for_status()
    assert token(sandbox.url).status_code == 200


def test_refused_credentials_for_a_while_are_accepted_again_after_it(sandbox):
    requests.post(sandbox.url + "/sandbox/tokens/refuse", json={"seconds": 60}, timeout=5).raise_for_status()
    assert token(sandbox.url).status_code == 422
    requests.post(sandbox.url + "/sandbox/clock", json={"advance": 61}, timeout=5).raise_for_status()
    assert token(sandbox.url).status_code == 200


def _expiring_in(sandbox):
    requests.put(sandbox.url + "/sandbox/config", json={"token_expiry": "in"}, timeout=5).raise_for_status()


def _back(sandbox):
    requests.put(sandbox.url + "/sandbox/config", json={"token_expiry": "at", "token_ttl": 3600},
                 timeout=5).raise_for_status()


def test_with_token_expiry_in_a_token_comes_with_expires_in_as_the_seeds_samples(sandbox):
    _expiring_in(sandbox)
    try:
        body = token(sandbox.url).json()
    finally:
        _back(sandbox)
    assert body.keys() == {"access_token", "expires_in"} and body["expires_in"] == 3600


def test_our_client_reads_the_expiry_in_either_form_the_documents_give(sandbox):
    import time

    from config import load_settings
    from orchestrator.plural import PluralClient

    settings = load_settings(plural_api_base=sandbox.url)
    for form in ("at", "in"):
        # a lifetime unlike the client's one-hour fallback, so each form is really read
        requests.put(sandbox.url + "/sandbox/config", json={"token_expiry": form, "token_ttl": 1800},
                     timeout=5).raise_for_status()
        try:
            held = PluralClient.from_settings(settings).requestor.fetch_token()
        finally:
            _back(sandbox)
        assert 1700 < held.expires_at - time.time() <= 1800, form

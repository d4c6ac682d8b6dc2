"""Every answer of the merchant API is JSON with a code, never a 500 (issue 8, findings 5 and 7):
the key before the body, amount limits, dependencies down, Idempotency-Key, callbacks that must
still send the customer on."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from orchestrator.api.app import create_app
from orchestrator.core.money import MAX_AMOUNT
from orchestrator.db.repo import IdempotencyStore, Keyed
from orchestrator.plural.signatures import sign_callback
from orchestrator.vault import Vault
from tests.test_api import KEY, body

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def api(harness):
    app = create_app(lambda: harness.service, KEY, lambda: harness.inbound,
                     idempotency=IdempotencyStore(harness.deps.repo))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = KEY
        yield client


class Down:
    """A Redis or broker that is not there."""

    def __getattr__(self, name):
        def fail(*_a, **_k):
            import redis.exceptions

            raise redis.exceptions.ConnectionError("Connection refused")

        return fail


def test_the_api_key_is_checked_before_the_body_is_read(api):
    answer = api.post("/v1/checkouts", content=b"{not json", headers={"X-API-Key": "wrong"})
    assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("value", [MAX_AMOUNT + 1, 2**63, 10**30])
def test_an_amount_above_the_limit_is_a_422_with_its_code(api, value):
    answer = api.post("/v1/checkouts", json=body(amount={"value": value, "currency": "INR"}))
    assert answer.status_code == 422 and answer.json()["code"] == "AMOUNT_LIMIT_EXCEEDED"


@pytest.mark.parametrize("value", [2**31, MAX_AMOUNT])
def test_amounts_beyond_32_bits_up_to_the_limit_are_stored_whole(api, harness, value):
    answer = api.post("/v1/checkouts", json=body(amount={"value": value, "currency": "INR"}))
    assert answer.status_code == 202
    assert harness.deps.repo.get(answer.json()["id"]).amount_value == value


def test_validation_errors_never_echo_a_card_number(api):
    card = {"number": "4012001037141112x", "name": "K", "cvv": "12", "expiry_month": "13", "expiry_year": "2030"}
    answer = api.post("/v1/checkouts", json=body(card=card))
    assert answer.status_code == 400
    assert "4012001037141112" not in answer.text and "input_value" not in answer.text


def test_an_otp_while_redis_is_down_is_a_503_naming_it_and_changes_nothing(api, harness):
    from tests.test_steps import checkout

    c = checkout(harness)
    harness.service.vault = Vault(Down(), harness.deps.settings.card_encryption_key.get_secret_value())
    answer = api.post(f"/v1/checkouts/{c.id}/otp", json={"otp": "123456"})
    assert answer.status_code == 503 and answer.json()["code"] == "UNAVAILABLE"
    assert answer.json()["unavailable"] == "redis"
    assert harness.state(c.id) == "AWAITING_OTP"


def test_a_database_that_is_down_is_a_503_naming_it(harness, tmp_path):
    from orchestrator.db.engine import make_engine
    from orchestrator.db.repo import Repo
    from orchestrator.service import CheckoutService

    from tests.conftest import free_port

    broken = Repo(make_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none", connect_args={"connect_timeout": 2}))
    svc = CheckoutService(harness.deps.settings, broken, harness.deps.vault, lambda *_: None)
    with TestClient(create_app(lambda: svc, KEY), raise_server_exceptions=False) as client:
        answer = client.get("/v1/checkouts/chk_x", headers={"X-API-Key": KEY})
    assert answer.status_code == 503 and answer.json() == {
        "code": "UNAVAILABLE", "message": "the database is unavailable; nothing was changed", "unavailable": "database"}


def test_a_callback_still_sends_the_customer_on_when_the_broker_is_down(api, harness):
    from tests.test_webhooks import start

    c = start(harness, callback_url="https://shop.example/paid")

    def no_broker(*_a):
        raise ConnectionError("broker down")

    harness.deps.enqueue = no_broker
    fields = {"order_id": c.plural_order_id, "status": "AUTHORIZED"}
    fields["signature"] = sign_callback(fields, harness.deps.settings.callback_key())
    answer = api.get("/callbacks/plural", params=fields, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("https://shop.example/paid?")


def test_a_non_ascii_callback_signature_is_refused_not_a_500(api, harness):
    from tests.test_webhooks import start

    c = start(harness)
    answer = api.get("/callbacks/plural", params={"order_id": c.plural_order_id, "status": "PROCESSED",
                                                  "signature": "é" * 64})
    assert answer.status_code == 400


# --- Idempotency-Key (Stripe's semantics) --------------------------------------------------

def test_a_retried_post_with_the_same_key_gets_the_first_answer_and_creates_one_checkout(api, harness):
    b = body()
    del b["merchant_order_reference"]
    key = f"idem-{uuid.uuid4().hex}"
    first = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": key})
    again = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert [s.value for s, _ in harness.queue] == ["create_order"]


def test_the_same_key_with_another_body_is_a_conflict(api):
    key = f"idem-{uuid.uuid4().hex}"
    api.post("/v1/checkouts", json=body(), headers={"Idempotency-Key": key})
    answer = api.post("/v1/checkouts", json=body(), headers={"Idempotency-Key": key})
    assert answer.status_code == 409 and answer.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def keyed_rows(harness, key):
    from sqlmodel import select

    from orchestrator.db.models import IdempotencyKey

    with harness.deps.repo.read_session() as s:
        return list(s.exec(select(IdempotencyKey).where(IdempotencyKey.key == key)))


def test_a_created_checkout_and_its_key_are_written_in_one_transaction(api, harness, monkeypatch):
    """The key and its answer are committed with the checkout (no transaction of their own): a
    create that fails after writing the key leaves neither, and its retry creates one checkout."""
    store = IdempotencyStore
    monkeypatch.setattr(store, "begin", lambda *a: pytest.fail("the key was begun in a transaction of its own"))
    monkeypatch.setattr(store, "finish", lambda *a: pytest.fail("the key was finished in a transaction of its own"))
    b = body()
    del b["merchant_order_reference"]
    key = f"idem-{uuid.uuid4().hex}"
    real = Keyed.store_in

    def store_then_fail(self, conn):
        assert real(self, conn)
        raise RuntimeError("the transaction fails after the key was written")

    monkeypatch.setattr(Keyed, "store_in", store_then_fail)
    assert api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": key}).status_code == 500
    assert keyed_rows(harness, key) == [] and harness.queue == []
    monkeypatch.setattr(Keyed, "store_in", real)
    first = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": key})
    (row,) = keyed_rows(harness, key)
    assert first.status_code == row.status_code == 202 and first.text == row.response_body
    assert harness.deps.repo.get(first.json()["id"]) is not None


def test_creates_at_once_with_one_key_create_one_checkout_and_answer_alike(harness):
    from tests.conftest import ThreadedUvicorn, at_once

    import requests

    app = create_app(lambda: harness.service, KEY, idempotency=IdempotencyStore(harness.deps.repo))
    b = body()
    del b["merchant_order_reference"]
    key = f"idem-{uuid.uuid4().hex}"
    with ThreadedUvicorn(app) as server:
        answers = at_once(lambda: requests.post(f"{server.url}/v1/checkouts", json=b, timeout=10,
                                                headers={"X-API-Key": KEY, "Idempotency-Key": key}), 6)
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 5
    assert [s.value for s, _ in harness.queue] == ["create_order"]


def test_an_error_answer_to_a_create_is_kept_with_its_key(api, harness):
    b = body()
    b["card"]["number"] = "4012001037141113"  # fails Luhn
    key = f"idem-{uuid.uuid4().hex}"
    first = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": key})
    again = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 400 and first.json()["code"] == "INVALID_CARD"
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_refund_retried_with_its_key_refunds_once(api, harness):
    from tests.test_capture_refunds import authorized

    c = authorized(harness, amount=10000, pre_auth=False)
    key = f"idem-{uuid.uuid4().hex}"
    answers = [api.post(f"/v1/checkouts/{c.id}/refunds", json={"amount": {"value": 1000, "currency": "INR"}},
                        headers={"Idempotency-Key": key}) for _ in range(3)]
    assert {a.status_code for a in answers} == {202} and len({a.json()["id"] for a in answers}) == 1
    harness.drain()
    assert harness.deps.repo.get(c.id).refunded_amount == 1000


def test_a_key_whose_first_request_failed_with_a_5xx_can_be_retried(api, harness):
    from tests.test_steps import checkout

    c = checkout(harness)
    key = f"idem-{uuid.uuid4().hex}"
    vault = harness.service.vault
    harness.service.vault = Vault(Down(), harness.deps.settings.card_encryption_key.get_secret_value())
    assert api.post(f"/v1/checkouts/{c.id}/otp", json={"otp": "123456"},
                    headers={"Idempotency-Key": key}).status_code == 503
    harness.service.vault = vault
    assert api.post(f"/v1/checkouts/{c.id}/otp", json={"otp": "123456"},
                    headers={"Idempotency-Key": key}).status_code == 202


def test_a_checkout_is_accepted_while_redis_is_down_and_the_sweep_drives_it_once_redis_is_back(harness, real_redis):
    """Issue 22, finding 15: the database is the source of truth. With Redis (vault and broker)
    stopped, a checkout is accepted at once (202) and stored, its card sealed in its row (never in
    clear), with a due time; once Redis is back the sweep sends its first step, which moves the
    card into the vault, and the checkout goes on to wait for its OTP."""
    import time

    from orchestrator.runtime import celery_enqueue, redis_client
    from orchestrator.service import CheckoutService
    from workers.celery_app import make_celery

    settings = harness.deps.settings.model_copy(update={"redis_url": real_redis.url})
    vault = Vault(redis_client(settings), settings.card_encryption_key.get_secret_value())
    svc = CheckoutService(settings, harness.deps.repo, vault, celery_enqueue(make_celery(settings)),
                          clock=harness.clock, plural=harness.deps.plural)
    real_redis.stop()
    with TestClient(create_app(lambda: svc, KEY), raise_server_exceptions=False) as client:
        started = time.monotonic()
        answer = client.post("/v1/checkouts", json=body(), headers={"X-API-Key": KEY})
        took = time.monotonic() - started
    assert answer.status_code == 202, answer.text
    assert took < 3.0  # the enqueue after the commit gave up quickly
    row = harness.deps.repo.get(answer.json()["id"])
    assert row.state == answer.json()["state"] and row.next_due_at is not None
    assert row.sealed_card and "4012001037141112" not in row.sealed_card and "Kevin" not in row.sealed_card

    real_redis.start()
    harness.deps.vault = vault  # the steps' vault: the Redis that is back
    harness.clock.advance(settings.step_lease_seconds + 1)
    harness.run_due()
    assert harness.status(row.id) == "AWAITING_OTP"
    assert harness.deps.repo.get(row.id).sealed_card is None


def test_a_sealed_card_past_its_time_is_cleared_and_never_reaches_the_vault(api, harness):
    harness.service.vault = Vault(Down(), harness.deps.settings.card_encryption_key.get_secret_value())
    answer = api.post("/v1/checkouts", json=body())
    assert answer.status_code == 202
    checkout_id = answer.json()["id"]
    assert harness.deps.repo.get(checkout_id).sealed_card
    harness.queue.clear()  # the enqueue was lost with the broker
    harness.clock.advance(harness.deps.settings.card_ttl_seconds + 1)
    harness.run_due()
    assert harness.deps.repo.get(checkout_id).sealed_card is None
    assert harness.deps.vault.card(checkout_id) is None
    assert harness.status(checkout_id) in ("FAILED", "EXPIRED", "CANCELLED")  # never paid

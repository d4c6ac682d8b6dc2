"""Every answer of the merchant API is JSON with a code, never a 500 (issue 8, findings 5 and 7):
the key before the body, amount limits, dependencies down, Idempotency-Key, callbacks that must
still send the customer on."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from orchestrator.entrypoints.api.app import create_app
from orchestrator.domain.money import MAX_AMOUNT
from orchestrator.store.idempotency import IdempotencyStore, Keyed
from orchestrator.plural.signatures import sign_callback
from orchestrator.store.vault import Vault
from tests.entrypoints.test_api import KEY, body

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
def test_amounts_beyond_32_bits_up_to_the_limit_are_stored_whole(api, harness, value, monkeypatch):
    monkeypatch.setattr(harness.service.settings, "max_order_amount", MAX_AMOUNT)
    answer = api.post("/v1/checkouts", json=body(amount={"value": value, "currency": "INR"}))
    assert answer.status_code == 202
    assert harness.deps.repo.get(answer.json()["id"]).amount_value == value


def test_an_order_above_plurals_ceiling_is_refused_with_nothing_created(api, harness):
    answer = api.post("/v1/checkouts", json=body(amount={"value": 100_000_001, "currency": "INR"},
                                                 merchant_order_reference="over-the-ceiling"))
    assert answer.status_code == 422
    assert answer.json()["code"] == "AMOUNT_LIMIT_EXCEEDED" and answer.json()["maximum"] == 100_000_000
    assert harness.deps.repo.by_reference("over-the-ceiling") is None


def test_an_order_at_plurals_ceiling_is_accepted(api):
    answer = api.post("/v1/checkouts", json=body(amount={"value": 100_000_000, "currency": "INR"}))
    assert answer.status_code == 202


def test_validation_errors_never_echo_a_card_number(api):
    card = {"number": "4012001037141112x", "name": "K", "cvv": "12", "expiry_month": "13", "expiry_year": "2030"}
    answer = api.post("/v1/checkouts", json=body(card=card))
    assert answer.status_code == 400
    assert "4012001037141112" not in answer.text and "input_value" not in answer.text


def test_an_otp_while_redis_is_down_is_a_503_naming_it_and_changes_nothing(api, harness):
    from tests.saga.test_steps import checkout

    c = checkout(harness)
    harness.service.vault = Vault(Down(), harness.deps.settings.card_encryption_key.get_secret_value())
    answer = api.post(f"/v1/checkouts/{c.id}/otp", json={"otp": "123456"})
    assert answer.status_code == 503 and answer.json()["code"] == "UNAVAILABLE"
    assert answer.json()["unavailable"] == "redis"
    assert harness.state(c.id) == "AWAITING_OTP"


def test_a_database_that_is_down_is_a_503_naming_it(harness, tmp_path):
    from orchestrator.store.database import make_engine
    from orchestrator.store.repo import Repo
    from orchestrator.merchant.service import CheckoutService

    from tests.conftest import free_port

    broken = Repo(make_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none", connect_args={"connect_timeout": 2}))
    svc = CheckoutService(dataclasses.replace(harness.deps, repo=broken, enqueue=lambda *_: None))
    with TestClient(create_app(lambda: svc, KEY), raise_server_exceptions=False) as client:
        answer = client.get("/v1/checkouts/chk_x", headers={"X-API-Key": KEY})
    assert answer.status_code == 503 and answer.json() == {
        "code": "UNAVAILABLE", "message": "the database is unavailable; nothing was changed", "unavailable": "database"}


def test_a_callback_still_sends_the_customer_on_when_the_broker_is_down(api, harness):
    from tests.inbound.test_webhooks import start

    c = start(harness, callback_url="https://shop.example/paid")

    def no_broker(*_a):
        raise ConnectionError("broker down")

    harness.redeps(enqueue=no_broker)
    fields = {"order_id": c.plural_order_id, "status": "AUTHORIZED"}
    fields["signature"] = sign_callback(fields, harness.deps.settings.callback_key())
    answer = api.get("/callbacks/plural", params=fields, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("https://shop.example/paid?")


def test_a_non_ascii_callback_signature_is_refused_not_a_500(api, harness):
    from tests.inbound.test_webhooks import start

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

    from orchestrator.store.models import IdempotencyKey

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
    from tests.saga.test_capture_refunds import authorized

    c = authorized(harness, amount=10000, pre_auth=False)
    key = f"idem-{uuid.uuid4().hex}"
    answers = [api.post(f"/v1/checkouts/{c.id}/refunds", json={"amount": {"value": 1000, "currency": "INR"}},
                        headers={"Idempotency-Key": key}) for _ in range(3)]
    assert {a.status_code for a in answers} == {202} and len({a.json()["id"] for a in answers}) == 1
    harness.drain()
    assert harness.deps.repo.get(c.id).refunded_amount == 1000


def test_a_key_whose_first_request_failed_with_a_5xx_can_be_retried(api, harness):
    from tests.saga.test_steps import checkout

    c = checkout(harness)
    key = f"idem-{uuid.uuid4().hex}"
    vault = harness.service.vault
    harness.service.vault = Vault(Down(), harness.deps.settings.card_encryption_key.get_secret_value())
    assert api.post(f"/v1/checkouts/{c.id}/otp", json={"otp": "123456"},
                    headers={"Idempotency-Key": key}).status_code == 503
    harness.service.vault = vault
    assert api.post(f"/v1/checkouts/{c.id}/otp", json={"otp": "123456"},
                    headers={"Idempotency-Key": key}).status_code == 202


# --- issue 22: bodies are capped as they stream in; integer parameters are bounded ---------------

CHUNK = 1024
CAP, WEBHOOK_CAP = 4 * CHUNK, 8 * CHUNK


def capped_app(harness):
    return create_app(lambda: harness.service, KEY, lambda: harness.inbound,
                      idempotency=IdempotencyStore(harness.deps.repo), max_body=CAP, max_webhook_body=WEBHOOK_CAP)


def call(app, path, headers, chunks):
    """One POST straight into the ASGI app, its body from ``chunks`` (chunked: no Content-Length);
    its status, its JSON and how many chunks the app asked for."""
    import asyncio
    import json

    asked = 0
    sent: list = []

    async def receive():
        nonlocal asked
        asked += 1
        chunk = next(chunks)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("203.0.113.9", 5000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(content), asked


def endless(allowed):
    """Chunks of ``CHUNK`` bytes; asking for one more than ``allowed`` fails the test."""
    for _ in range(allowed):
        yield b"x" * CHUNK
    pytest.fail("the body was read past its cap")


SIGNED = {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}


@pytest.mark.parametrize("path, headers, cap", [
    ("/v1/checkouts", {"X-API-Key": KEY, "Content-Type": "application/json"}, CAP),
    ("/v1/checkouts", {"X-API-Key": KEY, "Content-Type": "application/json", "Idempotency-Key": "idem-big"}, CAP),
    ("/webhooks/plural", SIGNED, WEBHOOK_CAP)], ids=["v1", "v1-idempotent", "webhook"])
def test_a_chunked_body_above_its_cap_is_a_413_read_no_further_than_the_cap(harness, path, headers, cap):
    status, answer, asked = call(capped_app(harness), path, headers, endless(cap // CHUNK + 1))
    assert (status, answer["code"]) == (413, "PAYLOAD_TOO_LARGE") and answer["message"]
    assert asked == cap // CHUNK + 1
    assert keyed_rows(harness, "idem-big") == [] and harness.queue == []


@pytest.mark.parametrize("path, headers", [("/v1/checkouts", {"X-API-Key": KEY}), ("/webhooks/plural", SIGNED)])
def test_a_content_length_above_the_cap_is_a_413_before_any_of_the_body_is_read(harness, path, headers):
    status, answer, asked = call(capped_app(harness), path, {**headers, "Content-Length": str(400 * 2**20)},
                                 endless(0))
    assert (status, answer["code"], asked) == (413, "PAYLOAD_TOO_LARGE", 0)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_webhook_without_its_signature_headers_is_a_401_before_its_body_is_read(harness, missing):
    headers = {k: v for k, v in SIGNED.items() if k != missing}
    status, answer, asked = call(capped_app(harness), "/webhooks/plural", headers, endless(0))
    assert (status, answer["code"], asked) == (401, "INVALID_SIGNATURE", 0) and missing in answer["message"]


def test_a_body_within_the_cap_is_still_read_whole(harness):
    with TestClient(capped_app(harness)) as client:
        answer = client.post("/v1/checkouts", json=body(), headers={"X-API-Key": KEY})
    assert answer.status_code == 202 and len(answer.request.content) < CAP


@pytest.mark.parametrize("query", ["after=99999999999999999999999", f"after={2**63}", "after=-1",
                                   "limit=99999999999999999999999", "limit=-99999999999999999999999"])
def test_an_integer_beyond_64_bits_in_a_query_is_a_400_not_a_500(api, query):
    answer = api.get(f"/v1/events?{query}")
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST"


def test_the_largest_64_bit_event_cursor_is_an_empty_page(api):
    answer = api.get(f"/v1/events?after={2**63 - 1}")
    assert answer.status_code == 200 and answer.json()["events"] == []


@pytest.mark.parametrize("query", ["limit=99999999999999999999999", "wait=1e400", "wait=99999999999999999999999"])
def test_other_numeric_parameters_beyond_their_bounds_are_400s(api, harness, query):
    path = "/v1/checkouts?" + query if query.startswith("limit") else f"/v1/checkouts/x?changed_from=PROCESSING&{query}"
    answer = api.get(path)
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST"


def test_a_checkout_is_accepted_while_redis_is_down_and_the_sweep_drives_it_once_redis_is_back(harness, real_redis):
    """Issue 22, finding 15: the database is the source of truth. With Redis (vault and broker)
    stopped, a checkout is accepted at once (202) and stored, its card sealed in its row (never in
    clear), with a due time; once Redis is back the sweep sends its first step, which moves the
    card into the vault, and the checkout goes on to wait for its OTP."""
    import time

    from orchestrator.entrypoints.runtime import celery_enqueue, redis_client
    from orchestrator.merchant.service import CheckoutService
    from workers.celery_app import make_celery

    settings = harness.deps.settings.model_copy(update={"redis_url": real_redis.url})
    vault = Vault(redis_client(settings), settings.card_encryption_key.get_secret_value())
    svc = CheckoutService(dataclasses.replace(harness.deps, settings=settings, vault=vault,
                                              enqueue=celery_enqueue(make_celery(settings))))
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
    harness.redeps(vault=vault)  # the steps' vault: the Redis that is back
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


@pytest.mark.parametrize("device_info", [
    {"browser_screen_height": 768},                 # a number: the sample sends every value as a string
    {"browser_java_enabled_val": "yes"},
    {"browser_window_size": "wide"},
    {"browser_fingerprint": "abc"},                 # not a device_info field
    "browser",
])
def test_a_malformed_device_info_is_a_4xx_with_its_code_and_creates_nothing(api, harness, device_info):
    reference = f"dev-{uuid.uuid4().hex[:12]}"
    answer = api.post("/v1/checkouts", json=body(merchant_order_reference=reference, device_info=device_info))
    assert answer.status_code in (400, 422) and set(answer.json()) >= {"code", "message"}
    assert harness.deps.repo.by_reference(reference) is None


def test_the_seeds_device_info_is_taken_with_the_checkout(api, harness):
    from tests.seeds import find

    device = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "CARD")[0]["payments"][0][
        "device_info"]
    answer = api.post("/v1/checkouts", json=body(device_info=device))
    assert answer.status_code == 202, answer.text
    assert harness.deps.repo.get(answer.json()["id"]).device_info == device


@pytest.mark.parametrize("query", [
    "cursor=" + __import__("base64").urlsafe_b64encode(b"2026-01-01T00:00:00|x").decode(),  # no zone
    "cursor=" + __import__("base64").urlsafe_b64encode(b"9999-12-31T23:59:59-23:59|x").decode(),
    "cursor=" + __import__("base64").urlsafe_b64encode(b"\xff\xfe|x").decode(),
    "created_after=9999-12-31T23:59:59-23:59", "created_after=0001-01-01T00:00:00%2B23:59"])
def test_a_list_cursor_or_time_we_cannot_use_is_a_400_not_a_500(api, query):
    answer = api.get(f"/v1/checkouts?{query}")
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST", answer.text


def test_any_merchant_error_is_answered_with_its_status_code_message_and_details():
    from orchestrator.entrypoints.api.errors import error_answer
    from orchestrator.merchant.errors import MerchantError

    answer = error_answer(MerchantError(418, "TEAPOT", "short and stout", spout=1))
    assert answer.status_code == 418
    assert json.loads(answer.body) == {"code": "TEAPOT", "message": "short and stout", "spout": 1}

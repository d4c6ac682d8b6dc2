"""Webhooks, return-URL callbacks and the deadline, with real collaborators (no Celery)."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from fastapi.testclient import TestClient
from sqlmodel import select

from orchestrator.entrypoints.api.app import create_app
from orchestrator.store.models import WebhookEvent
from orchestrator.plural.signatures import sign_callback, webhook_headers
from orchestrator.merchant.schemas import CheckoutIn
from orchestrator.inbound.webhooks import redis_kick, retry_deferred
from tests.conftest import ledger

OTP_CARD, ACS_CARD = "4012001037141112", "5555555555554444"


def start(h, card=ACS_CARD, pre_auth=False, **extra):
    body = CheckoutIn.model_validate({
        "merchant_order_reference": f"wh-{uuid.uuid4().hex[:12]}", "amount": {"value": 3000, "currency": "INR"},
        "pre_auth": pre_auth, **extra,
        "card": {"number": card, "name": "Kevin", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}})
    row, _ = h.service.create(body)
    h.drain()
    return h.deps.repo.get(row.id)


def approve(h, c, yes=True):
    token = parse_qs(urlparse(c.challenge_url).query)["token"][0]
    return requests.post(f"{h.sandbox_url}/sandbox/acs/{c.plural_payment_id}/{'approve' if yes else 'decline'}",
                         data={"token": token}, allow_redirects=False, timeout=5)


def order_json(h, order_id):
    return h.deps.plural.get_order(order_id).model_dump(mode="json", exclude_none=True)


def signed(h, event_type, data, *, webhook_id=None, ts=None):
    body = json.dumps({"event_type": event_type, "data": data}).encode()
    headers = webhook_headers(h.deps.settings.webhook_key(), webhook_id or f"msg_{uuid.uuid4().hex}",
                              ts or int(time.time()), body)
    return body, headers


def events(h):
    with h.deps.repo.session() as s:
        return list(s.exec(select(WebhookEvent)))


def reasons(h, c):
    return [t.reason for t in h.deps.repo.history(c.id)]


@pytest.fixture
def api(harness):
    app = create_app(lambda: harness.service, "k", lambda: harness.inbound)
    with TestClient(app) as client:
        yield client


def test_signed_webhook_settles_the_saga_without_polling(harness, api):
    h = harness
    c = start(h)
    approve(h, c)
    body, headers = signed(h, "ORDER_PROCESSED", order_json(h, c.plural_order_id))
    answer = api.post("/webhooks/plural", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json() == {"received": True, "duplicate": False}
    h.process_webhooks()
    assert h.state(c.id) == "COMPLETED"
    assert any(r.startswith("webhook ORDER_PROCESSED") for r in reasons(h, c))
    assert [e.status for e in events(h)] == ["applied"]


@pytest.mark.parametrize("tamper", ["body", "secret", "missing"])
def test_forged_or_unsigned_webhooks_are_refused_and_nothing_is_stored(harness, api, tamper):
    h = harness
    body, headers = signed(h, "ORDER_PROCESSED", {"order_id": "v1-x", "status": "PROCESSED"})
    if tamper == "body":
        body = body.replace(b"PROCESSED", b"CANCELLED")
    elif tamper == "secret":
        headers = webhook_headers(b"not-the-secret", headers["webhook-id"], int(time.time()), body)
    elif tamper == "missing":
        headers = {}
    answer = api.post("/webhooks/plural", content=body, headers=headers)
    assert answer.status_code == 401 and answer.json()["code"] == "INVALID_SIGNATURE"
    assert events(h) == []


@pytest.mark.parametrize("age", [301, 6 * 3600, -400])
def test_a_late_retry_is_kept_and_answered_but_its_snapshot_is_not_believed(harness, api, age):
    """Plural retries for hours with the event's first timestamp: the delivery is stored and
    acknowledged; applying it asks Get Order, and Plural (still waiting for the bank) wins."""
    h = harness
    c = start(h)
    claimed = {**order_json(h, c.plural_order_id), "status": "PROCESSED"}
    body, headers = signed(h, "ORDER_PROCESSED", claimed, ts=int(time.time()) - age)
    answer = api.post("/webhooks/plural", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["duplicate"] is False
    h.process_webhooks()
    assert h.state(c.id) == "AWAITING_REDIRECT"
    (event,) = events(h)
    assert event.status == "applied"


def test_a_late_retry_of_a_true_event_settles_through_get_order(harness, api):
    h = harness
    c = start(h)
    approve(h, c)
    body, headers = signed(h, "ORDER_PROCESSED", order_json(h, c.plural_order_id), ts=int(time.time()) - 3600)
    assert api.post("/webhooks/plural", content=body, headers=headers).status_code == 200
    again = api.post("/webhooks/plural", content=body, headers=headers)
    assert again.json()["duplicate"] is True
    h.process_webhooks()
    assert h.state(c.id) == "COMPLETED"
    last = h.deps.repo.history(c.id)[-1]
    assert last.to_state == "COMPLETED" and last.source == "poll"  # Plural's answer, not the snapshot


def test_a_malformed_body_is_refused_even_when_signed(harness, api):
    for raw in (b"not json", b"[1, 2]", b'{"event_type": "X"}'):
        headers = webhook_headers(harness.deps.settings.webhook_key(), f"msg_{uuid.uuid4().hex}",
                                  int(time.time()), raw)
        answer = api.post("/webhooks/plural", content=raw, headers=headers)
        assert answer.status_code == 400 and answer.json()["code"] == "MALFORMED_BODY"
    assert events(harness) == []


def test_a_duplicate_delivery_is_acknowledged_and_not_processed_again(harness, api):
    h = harness
    c = start(h)
    approve(h, c)
    body, headers = signed(h, "ORDER_PROCESSED", order_json(h, c.plural_order_id))
    assert api.post("/webhooks/plural", content=body, headers=headers).json()["duplicate"] is False
    again = api.post("/webhooks/plural", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert h.process_webhooks() == 1
    assert len(events(h)) == 1
    assert sum(r.startswith("webhook") for r in reasons(h, c)) == 1


def test_an_unknown_event_type_is_stored_logged_and_acknowledged(harness, api):
    h = harness
    body, headers = signed(h, "CUSTOMER_CREATED", {"customer_id": "c1"})
    assert api.post("/webhooks/plural", content=body, headers=headers).status_code == 200
    h.process_webhooks()
    (event,) = events(h)
    assert event.event_type == "CUSTOMER_CREATED" and event.status == "ignored"


def test_a_late_payment_failed_cannot_undo_an_authorization(harness):
    h = harness
    c = start(h, pre_auth=True)
    approve(h, c)
    authorized = order_json(h, c.plural_order_id)
    stale = json.loads(json.dumps(authorized))
    stale["status"] = "ATTEMPTED"
    stale["payments"][0]["status"] = "FAILED"
    for event_type, data in (("ORDER_AUTHORIZED", authorized), ("PAYMENT_FAILED", stale)):
        h.inbound.webhook(*signed(h, event_type, data))
    h.process_webhooks()
    c = h.deps.repo.get(c.id)
    assert c.state == "AUTHORIZED"
    notes = [e.note for e in events(h)]
    assert notes[1] == "no move from AUTHORIZED"
    assert [t.to_state for t in h.deps.repo.history(c.id)][-1] == "AUTHORIZED"


def test_reordered_events_end_in_plural_truth(harness):
    """PAYMENT_FAILED of a declined bank page arrives before an (impossible) older PENDING view."""
    h = harness
    c = start(h)
    approve(h, c, yes=False)
    failed = order_json(h, c.plural_order_id)
    h.inbound.webhook(*signed(h, "PAYMENT_FAILED", failed))
    h.process_webhooks()
    assert h.state(c.id) == "FAILED"
    approved_view = json.loads(json.dumps(failed))
    approved_view["status"] = "PROCESSED"
    h.inbound.webhook(*signed(h, "ORDER_PROCESSED", approved_view))
    h.process_webhooks()
    assert h.state(c.id) == "FAILED"


def test_an_event_before_the_saga_knows_its_order_is_kept_and_applied_later(harness):
    h = harness
    reference = f"early-{uuid.uuid4().hex[:10]}"
    from orchestrator.plural.models import Amount, CreateOrderRequest

    made = h.deps.plural.create_order(CreateOrderRequest(merchant_order_reference=reference,
                                                         order_amount=Amount(value=3000)))
    early = order_json(h, made.order_id)
    early["status"] = "CANCELLED"
    h.inbound.webhook(*signed(h, "ORDER_CANCELLED", early))
    h.process_webhooks()
    assert [e.status for e in events(h)] == ["deferred"]
    assert retry_deferred(h.deps) == 0
    body = CheckoutIn.model_validate({
        "merchant_order_reference": reference, "amount": {"value": 3000, "currency": "INR"},
        "card": {"number": ACS_CARD, "name": "Kevin", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}})
    row, _ = h.service.create(body)
    h.drain()
    h.clock.advance(5)  # strict: the repeated reference is refused, and the order looked up next run
    h.run_due()
    c = h.deps.repo.get(row.id)
    assert c.plural_order_id == made.order_id and c.state == "AWAITING_REDIRECT"
    assert retry_deferred(h.deps) == 1
    h.process_webhooks()
    (event,) = events(h)
    assert event.status == "applied"
    # the event said CANCELLED but Plural says PENDING: the saga follows Plural and keeps waiting
    assert h.state(c.id) == "AWAITING_REDIRECT"


def claimed_batch(h):
    """A delivery stored and claimed by a processor that then does nothing more (as if killed)."""
    from orchestrator.inbound.webhooks import claim_batch

    h.inbound.webhook(*signed(h, "CUSTOMER_CREATED", {"customer_id": "c1"}))
    (event,) = claim_batch(h.deps, 10)
    return event


def test_a_batch_whose_processor_died_is_released_within_a_claim_lease(harness):
    h = harness
    lease = h.deps.leases.lease_seconds
    claimed_batch(h)
    h.clock.advance(lease - 1)
    retry_deferred(h.deps)
    assert [e.status for e in events(h)] == ["processing"]
    h.clock.advance(2)
    retry_deferred(h.deps)
    assert [e.status for e in events(h)] == ["pending"]
    h.process_webhooks()
    assert [e.status for e in events(h)] == ["ignored"]


def test_a_live_processors_batch_is_renewed_past_the_lease(harness):
    from orchestrator.store.models import WebhookEvent

    h = harness
    lease = h.deps.leases.lease_seconds
    event = claimed_batch(h)
    with h.deps.leases.holding(WebhookEvent, event.claim, lambda: event.claim):
        for _ in range(3):
            h.clock.advance(lease * 2 / 3)
            assert h.deps.leases.renew() == 1
            retry_deferred(h.deps)
            assert [e.status for e in events(h)] == ["processing"]


def test_a_processor_whose_batch_was_taken_over_leaves_the_rivals_outcome(harness):
    from orchestrator.inbound.webhooks import _finish, claim_batch

    h = harness
    first = claimed_batch(h)
    h.clock.advance(h.deps.leases.lease_seconds + 1)
    retry_deferred(h.deps)
    (rival,) = claim_batch(h.deps, 10)
    _finish(h.deps, [(rival, "ignored", "the rival's outcome")])
    _finish(h.deps, [(first, "pending", "error: the first processor, late")])
    (event,) = events(h)
    assert (event.status, event.note) == ("ignored", "the rival's outcome")


def test_the_kick_publishes_once_while_a_processor_is_due(harness):
    import fakeredis

    published = []
    kick = redis_kick(fakeredis.FakeRedis(), lambda: published.append(1))
    for _ in range(50):
        kick()
    assert published == [1]


def test_a_valid_callback_polls_at_once_and_redirects_to_the_merchant(harness, api):
    h = harness
    c = start(h, callback_url="https://shop.test/thanks", failure_callback_url="https://shop.test/sorry")
    answer = approve(h, c)
    plural_redirect = urlparse(answer.headers["location"])
    assert plural_redirect.path == "/callbacks/plural"
    h.queue.clear()
    back = api.get("/callbacks/plural?" + plural_redirect.query, follow_redirects=False)
    assert back.status_code == 303
    target = urlparse(back.headers["location"])
    assert target.netloc == "shop.test" and target.path == "/thanks"
    assert parse_qs(target.query)["checkout_id"] == [c.id]
    h.drain()
    assert h.state(c.id) == "COMPLETED"


def test_a_declined_callback_goes_to_the_failure_url(harness, api):
    h = harness
    c = start(h, callback_url="https://shop.test/thanks", failure_callback_url="https://shop.test/sorry")
    plural_redirect = urlparse(approve(h, c, yes=False).headers["location"])
    fields = {k: v[0] for k, v in parse_qs(plural_redirect.query).items()}
    back = api.post("/callbacks/plural", data=fields, follow_redirects=False)
    assert urlparse(back.headers["location"]).path == "/sorry"
    h.drain()
    assert h.state(c.id) == "FAILED"


def test_a_tampered_callback_changes_nothing_and_says_so(harness, api):
    h = harness
    c = start(h)
    fields = {"order_id": c.plural_order_id, "status": "AUTHORIZED"}
    fields["signature"] = sign_callback(fields, h.deps.settings.callback_key())
    fields["status"] = "PROCESSED"
    h.queue.clear()
    back = api.get("/callbacks/plural", params=fields, follow_redirects=False)
    assert back.status_code == 400 and "nothing was changed" in back.text
    assert h.queue == [] and h.state(c.id) == "AWAITING_REDIRECT"


def test_timeout_cancels_at_plural(harness):
    h = harness
    c = start(h)
    h.clock.advance(h.deps.settings.customer_action_timeout + 1)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert h.status(c.id) == "CANCELLED" and not c.finished_late
    last = ledger(h.sandbox_url, c.plural_order_id)[-1]["kind"]
    assert (c.state, last) == (("CANCELLED", "CANCELLED") if h.mode == "lenient" else ("WATCHING", "PAYMENT_CREATED"))


def test_a_pre_auth_authorization_after_the_deadline_is_released_and_recorded_late(harness):
    h = harness
    c = start(h, pre_auth=True)
    h.clock.advance(h.deps.settings.customer_action_timeout + 1)
    from orchestrator.saga.sweeps import sweep_due

    sweep_due(h.deps)
    h.queue.clear()
    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step

    runner.run(h.deps, Step.POLL_ORDER, c.id)  # finds the deadline passed → CANCELLING
    assert h.state(c.id) == "CANCELLING"
    approve(h, c)  # the customer finishes just now
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "CANCELLED" and c.finished_late
    entries = ledger(h.sandbox_url, c.plural_order_id)
    assert [e["kind"] for e in entries][-2:] == ["AUTHORIZED", "CANCELLED"]
    assert entries[-1]["amount"]["value"] == 3000


def test_a_payment_processed_after_the_deadline_is_reported_not_hidden(harness):
    h = harness
    c = start(h)
    h.clock.advance(h.deps.settings.customer_action_timeout + 1)
    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step

    h.queue.clear()
    runner.run(h.deps, Step.POLL_ORDER, c.id)
    assert h.state(c.id) == "CANCELLING"
    approve(h, c)
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "COMPLETED" and c.finished_late and c.captured_amount == 3000


def test_deliveries_stored_in_one_batch_are_each_stored_once(harness):
    """A group commit of deliveries, one of them twice and one stored before: one row each, and
    each answer says whether it was new."""
    from orchestrator.inbound.webhooks import parse_delivery, store

    h = harness
    key = h.deps.settings.webhook_key()
    deliveries = [signed(h, "ORDER_PROCESSED", {"order_id": f"v1-{i}", "status": "PROCESSED"}) for i in range(3)]
    rows = lambda: [parse_delivery(key, body, headers, h.clock()) for body, headers in deliveries]  # noqa: E731
    assert store(h.deps, rows()[:1]) == [True]
    again = rows()
    assert store(h.deps, again + rows()[1:2]) == [False, True, True, False]
    assert sorted(e.webhook_id for e in events(h)) == sorted(headers["webhook-id"] for _, headers in deliveries)


def test_a_group_commit_answers_each_request_after_its_batch_and_fails_a_failed_batch():
    import asyncio

    from orchestrator.entrypoints.api.batching import GroupCommit

    batches: list[list[int]] = []

    def flush(items: list[int]) -> list[int]:
        batches.append(items)
        if -1 in items:
            raise RuntimeError("the database is down")
        return [i * 10 for i in items]

    async def scenario() -> tuple[list[int], list[BaseException]]:
        commit: GroupCommit[int, int] = GroupCommit(flush)
        answers = await asyncio.gather(*(commit.submit(i) for i in range(20)))
        failed = await asyncio.gather(commit.submit(-1), commit.submit(5), return_exceptions=True)
        await commit.stop()
        return list(answers), list(failed)

    answers, failed = asyncio.run(scenario())
    assert answers == [i * 10 for i in range(20)]
    assert sum(len(b) for b in batches[:-1]) == 20 and len(batches) < 21  # batched, not one by one
    assert all(isinstance(f, RuntimeError) for f in failed)


@pytest.mark.parametrize("field,value,named", [
    ("order_amount", {"value": 300, "currency": "INR"}, "order_amount is 300 at Plural, 3000 here"),
    ("pre_auth", True, "pre_auth is True at Plural, False here"),
    ("merchant_order_reference", "someone-else", "merchant_order_reference is 'someone-else' at Plural"),
])
def test_a_signed_snapshot_that_disagrees_with_the_checkout_never_completes_it(harness, field, value, named):
    h = harness
    c = start(h)
    approve(h, c)
    snapshot = order_json(h, c.plural_order_id)
    assert snapshot["status"] == "PROCESSED"
    snapshot[field] = value
    h.inbound.webhook(*signed(h, "ORDER_PROCESSED", snapshot))
    h.process_webhooks()
    c = h.deps.repo.get(c.id)
    assert c.state == "NEEDS_ATTENTION" and c.error_code == "GATEWAY_MISMATCH"
    assert named in c.error_message and c.captured_amount == 0
    assert [t.to_state for t in h.deps.repo.history(c.id)][-1] == "NEEDS_ATTENTION"

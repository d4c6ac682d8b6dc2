"""Pre-auth capture after delivery, hold expiry, refunds and the claiming sweep, with an injectable
clock and the sandbox's ledger as the witness."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from orchestrator.domain.saga import Step
from orchestrator.plural import PluralClient
from orchestrator.merchant.refunds import RefundRefused, refunds_of
from orchestrator.saga.steps.refund import get_refund
from orchestrator.merchant.schemas import CheckoutIn
from orchestrator.merchant.errors import CheckoutError
from orchestrator.saga.sweeps import sweep_due
from tests.conftest import at_once, ledger
from tests.inbound.test_webhooks import signed

OTP_CARD = "4012001037141112"


def authorized(h, amount=5000, pre_auth=True):
    body = CheckoutIn.model_validate({
        "merchant_order_reference": f"cap-{uuid.uuid4().hex[:12]}", "amount": {"value": amount, "currency": "INR"},
        "pre_auth": pre_auth,
        "card": {"number": OTP_CARD, "name": "Kevin", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}})
    row, _ = h.service.create(body)
    h.drain()
    h.service.submit_otp(row.id, "123456")
    h.drain()
    c = h.deps.repo.get(row.id)
    assert c.state == ("AUTHORIZED" if pre_auth else "COMPLETED")
    return c


def kinds(h, c):
    return [(e["kind"], (e.get("amount") or {}).get("value")) for e in ledger(h.sandbox_url, c.plural_order_id)]


@pytest.fixture
def sandbox_config(harness):
    yield lambda **values: requests.put(f"{harness.sandbox_url}/sandbox/config", json=values, timeout=5)
    requests.put(f"{harness.sandbox_url}/sandbox/config", json={"refund_settle_seconds": 0.0, "fail_refunds": False},
                 timeout=5)


def impatient(h):
    return PluralClient.from_settings(h.deps.settings, read_timeout=0.3, max_attempts=2, backoff_base=0.01,
                                      backoff_cap=0.01)


# --- capture ------------------------------------------------------------------------------

def test_delivery_captures_in_full_once(harness):
    h = harness
    c = authorized(h)
    h.clock.advance(2 * 86400)  # delivered two days later: long after the customer's deadline, not late
    h.service.deliver(c.id, None)
    h.drain()
    done = h.deps.repo.get(c.id)
    assert done.state == "COMPLETED" and done.captured_amount == 5000 and done.delivered_at
    assert not done.finished_late
    again = h.service.deliver(c.id, None)
    h.drain()
    assert again.state == "COMPLETED" and h.queue == []
    assert [k for k in kinds(h, c) if k[0] == "CAPTURED"] == [("CAPTURED", 5000)]


def test_partial_capture_releases_the_rest(harness):
    h = harness
    c = authorized(h)
    h.service.deliver(c.id, 3000)
    h.drain()
    done = h.deps.repo.get(c.id)
    assert done.state == "COMPLETED" and done.captured_amount == 3000 and done.capture_amount == 3000
    assert ("CAPTURED", 3000) in kinds(h, c) and ("RELEASED", 2000) in kinds(h, c)


def test_capture_above_the_authorization_is_refused_and_nothing_changes(harness):
    h = harness
    c = authorized(h)
    with pytest.raises(CheckoutError) as exc:
        h.service.deliver(c.id, 5001)
    assert exc.value.status == 422 and exc.value.code == "CAPTURE_EXCEEDS_AUTHORIZED"
    assert h.state(c.id) == "AUTHORIZED" and h.queue == []


def test_a_second_delivery_with_another_amount_is_a_conflict(harness):
    h = harness
    c = authorized(h)
    h.service.deliver(c.id, 1000)
    with pytest.raises(CheckoutError) as exc:
        h.service.deliver(c.id, 2000)
    assert exc.value.code == "DELIVERY_CONFLICT"


def test_delivery_of_a_checkout_that_is_not_pre_auth_is_refused(harness):
    c = authorized(harness, pre_auth=False)
    with pytest.raises(CheckoutError) as exc:
        harness.service.deliver(c.id, None)
    assert exc.value.code == "NOT_PRE_AUTH"


def test_a_capture_that_timed_out_is_reconciled_and_captured_exactly_once(harness):
    h = harness
    c = authorized(h)
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "/capture$", "seconds": 0.8, "count": 2}]}, timeout=5)
    patient, h.deps.plural = h.deps.plural, impatient(h)
    h.service.deliver(c.id, None)
    h.drain()
    h.deps.plural = patient
    mid = h.deps.repo.get(c.id)
    assert mid.state == "CAPTURING"
    assert [a.outcome for a in h.deps.repo.attempts(c.id, Step.CAPTURE_ORDER.value)] == ["unknown"]
    h.clock.advance(5)
    time.sleep(0.9)
    h.run_due()
    done = h.deps.repo.get(c.id)
    assert done.state == "COMPLETED" and done.captured_amount == 5000
    assert [k for k in kinds(h, c) if k[0] == "CAPTURED"] == [("CAPTURED", 5000)]
    assert [a.outcome for a in h.deps.repo.attempts(c.id, Step.CAPTURE_ORDER.value)] == ["succeeded"]


def test_an_undelivered_hold_expires_before_it_lapses(harness):
    h = harness
    c = authorized(h)
    h.clock.advance(6 * 86400)
    h.run_due()
    assert h.state(c.id) == "AUTHORIZED"
    h.clock.advance(86400)
    h.run_due()
    done = h.deps.repo.get(c.id)
    assert done.state == "EXPIRED" and done.cancel_reason == "HOLD_EXPIRED"
    assert "no delivery by the capture deadline" in " ".join(t.reason for t in h.deps.repo.history(c.id))
    assert kinds(h, c)[-1] == ("CANCELLED", 5000)


def test_merchant_cancel_of_an_authorized_hold_releases_it(harness):
    h = harness
    c = authorized(h)
    h.service.cancel(c.id)
    h.drain()
    assert h.state(c.id) == "CANCELLED" and kinds(h, c)[-1] == ("CANCELLED", 5000)


def test_two_sweeps_racing_enqueue_each_due_row_once(harness):
    h = harness
    rows = [authorized(h) for _ in range(4)]
    for c in rows:
        h.service.deliver(c.id, None)
    h.queue.clear()  # the capture messages are lost
    h.clock.advance(h.deps.settings.step_lease_seconds + 1)
    counts = at_once(lambda: sweep_due(h.deps), 4)
    assert sum(counts) == 4
    assert sorted(i for _, i in h.queue) == sorted(c.id for c in rows)
    h.drain()
    for c in rows:
        assert h.state(c.id) == "COMPLETED"
        assert [k for k in kinds(h, c) if k[0] == "CAPTURED"] == [("CAPTURED", 5000)]


# --- refunds ------------------------------------------------------------------------------

def completed(h, amount=10000):
    return authorized(h, amount=amount, pre_auth=False)


def refund(h, c, amount=None, reference=None):
    row, created = h.service.refund(c.id, amount, reference)
    h.drain()
    return get_refund(h.deps, row.id), created


def test_full_refund_is_processed_and_counted(harness):
    h = harness
    c = completed(h)
    r, created = refund(h, c)
    assert created and r.state == "PROCESSED" and r.amount_value == 10000
    assert h.deps.repo.get(c.id).refunded_amount == 10000
    assert ("REFUNDED", 10000) in kinds(h, c)


def test_partial_refunds_never_exceed_what_was_captured(harness):
    h = harness
    c = completed(h)
    assert refund(h, c, 4000)[0].state == "PROCESSED"
    assert refund(h, c, 5000)[0].state == "PROCESSED"
    with pytest.raises(RefundRefused) as exc:
        h.service.refund(c.id, 1001, None)
    assert exc.value.status == 422 and exc.value.code == "REFUND_EXCEEDS_CAPTURED"
    assert exc.value.details["refundable"]["value"] == 1000
    rest, _ = refund(h, c)
    assert rest.amount_value == 1000
    assert h.deps.repo.get(c.id).refunded_amount == 10000
    assert [k for k in kinds(h, c) if k[0] == "REFUNDED"] == [("REFUNDED", 4000), ("REFUNDED", 5000),
                                                             ("REFUNDED", 1000)]


def test_a_refund_reference_is_idempotent(harness):
    h = harness
    c = completed(h)
    reference = f"my-refund-{uuid.uuid4().hex[:8]}"
    first, created = refund(h, c, 2500, reference)
    again, created_again = refund(h, c, 2500, reference)
    assert created and not created_again and first.id == again.id
    with pytest.raises(RefundRefused) as exc:
        h.service.refund(c.id, 2600, reference)
    assert exc.value.code == "REFERENCE_CONFLICT"
    assert [k for k in kinds(h, c) if k[0] == "REFUNDED"] == [("REFUNDED", 2500)]


def test_refund_of_a_checkout_that_is_not_completed_is_refused(harness):
    c = authorized(harness)
    with pytest.raises(RefundRefused) as exc:
        harness.service.refund(c.id, None, None)
    assert exc.value.code == "INVALID_STATE"


def test_concurrent_refunds_cannot_spend_the_same_paise(harness):
    h = harness
    c = completed(h)

    def ask():
        try:
            return h.service.refund(c.id, 6000, None)[0].id
        except RefundRefused as exc:
            return exc.code

    results = at_once(ask, 4)
    assert results.count("REFUND_EXCEEDS_CAPTURED") == 3


def test_a_pending_refund_is_tracked_by_polling(harness, sandbox_config):
    h = harness
    sandbox_config(refund_settle_seconds=0.3)
    c = completed(h)
    r, _ = refund(h, c, 3000)
    assert r.state == "PENDING" and r.plural_refund_order_id
    time.sleep(0.4)
    h.clock.advance(10)
    h.run_due()
    assert get_refund(h.deps, r.id).state == "PROCESSED"
    assert h.deps.repo.get(c.id).refunded_amount == 3000


def test_a_pending_refund_is_settled_by_its_webhook(harness, sandbox_config):
    h = harness
    sandbox_config(refund_settle_seconds=0.2)
    c = completed(h)
    r, _ = refund(h, c, 3000)
    time.sleep(0.3)
    data = h.deps.plural.get_order(r.plural_refund_order_id).model_dump(mode="json", exclude_none=True)
    assert data["status"] == "PROCESSED"
    h.inbound.webhook(*signed(h, "REFUND_PROCESSED", data))
    h.process_webhooks()
    assert get_refund(h.deps, r.id).state == "PROCESSED"


def test_a_failed_refund_frees_its_amount_again(harness, sandbox_config):
    h = harness
    c = completed(h)
    sandbox_config(fail_refunds=True)
    r, _ = refund(h, c)
    assert r.state == "FAILED" and r.error_code == "REFUND_FAILED"
    sandbox_config(fail_refunds=False)
    again, _ = refund(h, c)
    assert again.state == "PROCESSED" and again.amount_value == 10000


def test_a_refund_whose_answer_was_lost_is_found_by_reference_not_sent_twice(harness):
    h = harness
    c = completed(h)
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "/refunds/", "seconds": 0.8, "count": 2}]}, timeout=5)
    patient, h.deps.plural = h.deps.plural, impatient(h)
    r, _ = refund(h, c, 4000)
    h.deps.plural = patient
    assert r.state == "REQUESTED" and r.failures == 1
    time.sleep(0.9)
    h.clock.advance(60)
    h.run_due()
    assert get_refund(h.deps, r.id).state == "PROCESSED"
    assert [k for k in kinds(h, c) if k[0] == "REFUNDED"] == [("REFUNDED", 4000)]


def test_the_cancel_webhook_of_an_expiring_hold_ends_it_expired_not_cancelled(harness):
    h = harness
    c = authorized(h)
    h.clock.advance(7 * 86400)
    sweep_due(h.deps)
    expire = [item for item in h.queue if item[0] is Step.EXPIRE_HOLD]
    h.queue.clear()
    from orchestrator.saga import runner

    runner.run(h.deps, Step.EXPIRE_HOLD, expire[0][1])
    assert h.state(c.id) == "CANCELLING"
    cancelled = h.deps.plural.cancel_order(c.plural_order_id)  # Plural acts; its webhook beats our cancel step
    h.queue.clear()
    h.inbound.webhook(*signed(h, "ORDER_CANCELLED", cancelled.model_dump(mode="json", exclude_none=True)))
    h.process_webhooks()
    assert h.state(c.id) == "EXPIRED"


def test_a_capture_reported_by_webhook_days_later_is_not_late(harness):
    from orchestrator.plural.models import CaptureRequest

    h = harness
    c = authorized(h)
    h.clock.advance(2 * 86400)
    h.service.deliver(c.id, None)
    h.queue.clear()  # Plural's webhook arrives before our capture step reports
    order = h.deps.plural.capture_order(c.plural_order_id,
                                        CaptureRequest(merchant_capture_reference=c.merchant_capture_reference))
    h.inbound.webhook(*signed(h, "ORDER_PROCESSED", order.model_dump(mode="json", exclude_none=True)))
    h.process_webhooks()
    done = h.deps.repo.get(c.id)
    assert done.state == "COMPLETED" and done.captured_amount == 5000 and not done.finished_late


# --- issue 22: a refund is only ever what Plural says of its own refund order -----------------

def one_503_on_the_refund(h, c, amount, reference=None):
    """Request a refund whose submit gets one 503 (unhandled at Plural): its outcome unknown."""
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "error", "path": "/refunds/", "statuses": [503], "count": 1}]}, timeout=5).raise_for_status()
    patient, h.deps.plural = h.deps.plural, PluralClient.from_settings(h.deps.settings, max_attempts=1)
    try:
        r, _ = refund(h, c, amount, reference)
    finally:
        h.deps.plural = patient
    assert r.state == "REQUESTED" and r.failures == 1
    return r


def test_a_refund_named_like_another_checkouts_order_refunds_its_own_checkout(harness):
    h = harness
    a, b = completed(h, 7000), completed(h, 7000)
    r = one_503_on_the_refund(h, b, 7000, reference=a.merchant_order_reference)
    h.clock.advance(60)
    h.run_due()
    r = get_refund(h.deps, r.id)
    assert r.state == "PROCESSED" and r.merchant_refund_reference == a.merchant_order_reference
    assert h.deps.plural.get_order(r.plural_refund_order_id).parent_order_id == b.plural_order_id
    assert [k for k in kinds(h, b) if k[0] == "REFUNDED"] == [("REFUNDED", 7000)]
    assert [k for k in kinds(h, a) if k[0] == "REFUNDED"] == []


def test_an_order_found_by_the_refunds_reference_that_is_not_its_refund_is_never_adopted(harness):
    from orchestrator.plural.models import Amount, CreateOrderRequest

    h = harness
    c = completed(h, 7000)
    r = one_503_on_the_refund(h, c, 7000)
    (sent,) = [a.reference for a in h.deps.repo.attempts(c.id, Step.REFUND.value)]
    # another order at Plural holds the reference our refund was sent with
    other = h.deps.plural.create_order(CreateOrderRequest(merchant_order_reference=sent,
                                                          order_amount=Amount(value=7000)))
    h.clock.advance(60)
    h.run_due()
    r = get_refund(h.deps, r.id)
    assert (r.state, r.error_code, r.next_due_at) == ("NEEDS_ATTENTION", "REFUND_MISMATCH", None)
    assert other.order_id in r.error_message and r.id in r.error_message and c.plural_order_id in r.error_message
    assert r.plural_refund_order_id is None and h.deps.repo.get(c.id).refunded_amount == 0
    with pytest.raises(RefundRefused):  # its amount stays reserved: it may still exist at Plural
        h.service.refund(c.id, 1, None)


def test_a_refund_webhook_naming_another_parent_or_amount_is_never_adopted(harness, sandbox_config):
    h = harness
    a, c = completed(h), completed(h)
    sandbox_config(refund_settle_seconds=30.0)
    r, _ = refund(h, c, 3000)
    assert r.state == "PENDING"
    data = h.deps.plural.get_order(r.plural_refund_order_id).model_dump(mode="json", exclude_none=True)
    data.update(status="PROCESSED", parent_order_id=a.plural_order_id, order_amount={"value": 10000, "currency": "INR"})
    h.inbound.webhook(*signed(h, "REFUND_PROCESSED", data))
    h.process_webhooks()
    r = get_refund(h.deps, r.id)
    assert (r.state, r.error_code) == ("NEEDS_ATTENTION", "REFUND_MISMATCH")
    assert a.plural_order_id in r.error_message and h.deps.repo.get(c.id).refunded_amount == 0


def refunded_with_its_answer_lost(h, c, amount):
    """A refund Plural made whose answer was lost (the call hung past our read timeout, once)."""
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "/refunds/", "seconds": 0.8, "count": 1}]}, timeout=5).raise_for_status()
    patient, h.deps.plural = h.deps.plural, PluralClient.from_settings(h.deps.settings, read_timeout=0.3,
                                                                        max_attempts=1)
    try:
        r, _ = refund(h, c, amount)
    finally:
        h.deps.plural = patient
    return r


def test_a_merchant_reference_naming_another_refund_of_ours_never_adopts_that_refund(harness):
    from orchestrator.domain.saga import plural_refund_reference

    h = harness
    c = completed(h)
    y = refunded_with_its_answer_lost(h, c, 3000)
    assert y.state == "REQUESTED"
    time.sleep(0.9)
    x, _ = refund(h, c, 3000, reference=plural_refund_reference(y.id))
    h.clock.advance(60)
    h.run_due()
    x, y = get_refund(h.deps, x.id), get_refund(h.deps, y.id)
    assert (x.state, y.state) == ("PROCESSED", "PROCESSED") and x.plural_refund_order_id != y.plural_refund_order_id
    assert [k for k in kinds(h, c) if k[0] == "REFUNDED"] == [("REFUNDED", 3000), ("REFUNDED", 3000)]
    assert h.deps.repo.get(c.id).refunded_amount == 6000


# --- issue 22: a failed automatic refund of a late payment is not stranded ----------------------

@pytest.fixture
def api(harness):
    from fastapi.testclient import TestClient

    from orchestrator.entrypoints.api.app import create_app

    with TestClient(create_app(lambda: harness.service, "test-api-key")) as client:
        client.headers["X-API-Key"] = "test-api-key"
        yield client


def paid_after_the_cancel_and_refund_failed(h, sandbox_config):
    from tests.inbound.test_webhooks import approve, start

    if h.mode != "strict":
        pytest.skip("the lenient sandbox cancels the open payment")
    c = start(h)
    h.service.cancel(c.id)
    h.drain()
    assert h.state(c.id) == "WATCHING"
    sandbox_config(fail_refunds=True)
    approve(h, c)  # the customer pays anyway; its automatic refund fails at Plural
    h.clock.advance(10)
    h.run_due()
    sandbox_config(fail_refunds=False)
    return c


def test_a_failed_refund_of_a_late_payment_needs_attention(harness, sandbox_config, api):
    c = paid_after_the_cancel_and_refund_failed(harness, sandbox_config)
    view = api.get(f"/v1/checkouts/{c.id}").json()
    assert (view["status"], view["late_undo"], view["captured_amount"]["value"]) == ("CANCELLED", "REFUNDED", 3000)
    (late,) = view["refunds"]
    assert (late["origin"], late["status"], late["error"]["code"]) == ("LATE_PAYMENT", "NEEDS_ATTENTION",
                                                                       "LATE_REFUND_FAILED")
    told = api.get("/v1/events", params={"type": "refund.needs_attention"}).json()["events"]
    assert [e["data"]["id"] for e in told] == [late["id"]]
    from orchestrator.store import reports

    stuck = reports.overview(harness.deps.repo, harness.clock())["needs_attention"]
    assert [(a["id"], a["stuck_in"]) for a in stuck] == [(c.id, f"refund {late['id']}")]


def test_a_checkout_whose_late_refund_failed_can_be_refunded_again(harness, sandbox_config, api):
    h = harness
    c = paid_after_the_cancel_and_refund_failed(h, sandbox_config)
    answer = api.post(f"/v1/checkouts/{c.id}/refunds", json={})
    assert answer.status_code == 202 and answer.json()["amount"]["value"] == 3000
    h.drain()
    view = api.get(f"/v1/checkouts/{c.id}").json()
    assert view["refunded_amount"]["value"] == 3000
    assert [(r["origin"], r["status"]) for r in view["refunds"]] == [("LATE_PAYMENT", "FAILED"),
                                                                     ("MERCHANT", "PROCESSED")]
    assert [k for k in kinds(h, c) if k[0] == "REFUNDED"] == [("REFUNDED", 3000)]
    again = api.post(f"/v1/checkouts/{c.id}/refunds", json={})
    assert again.status_code == 422 and again.json()["code"] == "REFUND_EXCEEDS_CAPTURED"


def test_a_merchant_reference_shaped_like_our_automatic_name_cannot_strand_a_late_refund(harness):
    """A merchant who names a refund of another checkout as we would name this one's late refund
    (``chk_….r1`` is outside their alphabet; the old ``chk_…-r1`` was not) cannot make it unwritable."""
    from tests.outbound.test_events import completed
    from tests.inbound.test_webhooks import approve, start

    h = harness
    if h.mode != "strict":
        pytest.skip("the lenient sandbox cancels the open payment")
    c = start(h)
    h.service.cancel(c.id)
    h.drain()
    other = completed(h)
    h.service.refund(other.id, 100, f"{c.id}-r1")
    from pydantic import ValidationError

    from orchestrator.merchant.schemas import RefundIn

    with pytest.raises(ValidationError):  # our automatic name is outside the merchant's alphabet
        RefundIn(merchant_refund_reference=f"{c.id}.r1")
    approve(h, c)  # the customer pays anyway
    h.clock.advance(10)
    h.run_due()
    row = h.deps.repo.get(c.id)
    assert (row.state, row.late_undo) == ("CANCELLED", "REFUNDED")
    assert [r.origin for r in refunds_of(h.deps, c.id)] == ["LATE_PAYMENT"]


def test_a_refund_first_sent_under_the_merchants_reference_is_sent_again_only_under_it(harness):
    """A refund from before references were ours, whose outcome was unknown, that Plural does not
    find yet (lagging): it is sent again under the reference it was first sent with, so Plural's
    duplicate check still guards it, never under ours as a second refund."""
    from orchestrator.plural.models import Amount, RefundRequest

    h = harness
    c = completed(h)
    legacy = f"legacy-{uuid.uuid4().hex[:12]}"
    r, _ = h.service.refund(c.id, 4000, legacy)
    h.queue.clear()
    h.deps.plural.create_refund(c.plural_order_id, RefundRequest(merchant_order_reference=legacy,
                                                                 order_amount=Amount(value=4000, currency="INR")))
    h.deps.repo.begin_attempt(c.id, Step.REFUND.value, legacy, None)  # sent; its answer lost
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "error", "method": "GET", "path": f"/orders/reference/{legacy}", "statuses": [404],
         "count": 1}]}, timeout=5).raise_for_status()
    for _ in range(4):
        h.clock.advance(h.deps.settings.retry_backoff_cap + h.deps.settings.step_lease_seconds)
        h.run_due()
        h.drain()
    assert [k for k in kinds(h, c) if k[0] == "REFUNDED"] == [("REFUNDED", 4000)]
    assert get_refund(h.deps, r.id).state == "PROCESSED"


# --- an operator's resolve of a refund that needs attention ----------------------------------

def needing_attention(h, r):
    from orchestrator.domain.saga import RefundState
    from orchestrator.saga.steps.refund import move

    assert move(h.deps, get_refund(h.deps, r.id), RefundState.NEEDS_ATTENTION, error_code="REFUND_MISMATCH",
                next_due_at=None)
    return get_refund(h.deps, r.id)


def test_a_refund_resolved_by_an_operator_follows_the_refund_plural_processed(harness):
    h = harness
    c = completed(h, 7000)
    r = refunded_with_its_answer_lost(h, c, 3000)
    time.sleep(0.9)
    r = needing_attention(h, r)
    done = h.service.resolve_refund(r.id, "asha")
    assert (done.state, done.error_code) == ("PROCESSED", None) and "asha" in done.error_message
    assert h.deps.repo.get(c.id).refunded_amount == 3000
    assert [k for k in kinds(h, c) if k[0] == "REFUNDED"] == [("REFUNDED", 3000)]


def test_a_refund_plural_has_no_order_for_is_resolved_failed_and_its_amount_freed(harness):
    h = harness
    c = completed(h, 7000)
    r = needing_attention(h, one_503_on_the_refund(h, c, 7000))
    done = h.service.resolve_refund(r.id, "asha")
    assert (done.state, done.error_code) == ("FAILED", "REFUND_NOT_AT_PLURAL")
    again, created = h.service.refund(c.id, 7000, None)
    assert created and again.amount_value == 7000


def test_an_operator_cannot_resolve_a_refund_whose_reference_names_another_order(harness):
    from orchestrator.plural.models import Amount, CreateOrderRequest

    h = harness
    c = completed(h, 7000)
    r = one_503_on_the_refund(h, c, 7000)
    (sent,) = [a.reference for a in h.deps.repo.attempts(c.id, Step.REFUND.value)]
    h.deps.plural.create_order(CreateOrderRequest(merchant_order_reference=sent, order_amount=Amount(value=7000)))
    h.clock.advance(60)
    h.run_due()
    assert get_refund(h.deps, r.id).state == "NEEDS_ATTENTION"
    with pytest.raises(RefundRefused) as refused:
        h.service.resolve_refund(r.id, "asha")
    assert refused.value.code == "RESOLVE_REFUSED" and "CHARGE" in refused.value.message
    assert get_refund(h.deps, r.id).state == "NEEDS_ATTENTION"


def test_only_a_refund_that_needs_attention_can_be_resolved(harness):
    h = harness
    c = completed(h)
    r, _ = refund(h, c, 3000)
    with pytest.raises(RefundRefused) as refused:
        h.service.resolve_refund(r.id, "asha")
    assert refused.value.code == "INVALID_STATE"


# --- answers lost after Plural acted (chaos: duplicates of our own references) ----------------

def _until(h, checkout_id, state, seconds=5):
    """Run what is due, moving the clock on, until the checkout is in ``state`` (a step that met
    its own reference looks it up on its next run)."""
    for _ in range(6):
        if h.state(checkout_id) == state:
            return
        h.clock.advance(seconds)
        h.run_due()
    assert h.state(checkout_id) == state


@pytest.mark.parametrize("call", ["/orders$", "/payments$", "/capture$", "/refunds/"])
def test_an_answer_lost_after_plural_acted_is_resolved_by_look_up_and_nothing_is_made_twice(harness, call):
    """The call succeeded at Plural but its answer was lost on the way (502): our retry meets its
    own reference (strict: 422 DUPLICATE_REQUEST; lenient: the object replayed), and the saga
    finds what it made instead of failing or making it again."""
    h = harness
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "drop_answer", "path": call, "method": "PUT" if call == "/capture$" else "POST",
         "statuses": [502], "count": 1}]}, timeout=5).raise_for_status()
    before = requests.get(f"{h.sandbox_url}/sandbox/health", timeout=5).json()["duplicates_refused"]
    body = CheckoutIn.model_validate({
        "merchant_order_reference": f"lost-{uuid.uuid4().hex[:12]}", "amount": {"value": 5000, "currency": "INR"},
        "pre_auth": True,
        "card": {"number": OTP_CARD, "name": "Kevin", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}})
    row, _ = h.service.create(body)
    h.drain()
    _until(h, row.id, "AWAITING_OTP")
    h.service.submit_otp(row.id, "123456")
    h.drain()
    _until(h, row.id, "AUTHORIZED")
    h.service.deliver(row.id, None)
    h.drain()
    _until(h, row.id, "COMPLETED")
    r, _ = refund(h, h.deps.repo.get(row.id), 1000)
    for _ in range(6):
        if get_refund(h.deps, r.id).state == "PROCESSED":
            break
        h.clock.advance(60)
        h.run_due()
    assert get_refund(h.deps, r.id).state == "PROCESSED"
    faults = requests.get(f"{h.sandbox_url}/sandbox/faults", timeout=5).json()
    assert faults["rules"][0]["count"] == 0  # the answer was lost once
    assert sorted(kinds(h, h.deps.repo.get(row.id))) == sorted([
        ("ORDER_CREATED", 5000), ("PAYMENT_CREATED", 5000), ("AUTHORIZED", 5000), ("CAPTURED", 5000),
        ("REFUND_CREATED", 1000), ("REFUNDED", 1000)])
    refused = requests.get(f"{h.sandbox_url}/sandbox/health", timeout=5).json()["duplicates_refused"] - before
    assert refused >= (1 if h.mode == "strict" else 0)

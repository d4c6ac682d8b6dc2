"""Plural refusing our client credentials (a rotated or mistyped secret) is a configuration fault,
never a checkout's failure: every step kind waits, uncounted, and goes on by itself once the
credentials work again; a checkout that waited CREDENTIALS_WAIT_SECONDS NEEDS_ATTENTION with the reason."""

from __future__ import annotations

import uuid

import requests

from orchestrator.saga import runner
from orchestrator.merchant.schemas import CheckoutIn

OTP_CARD, ACS_CARD = "4012001037141112", "5555555555554444"
RETRY = 15.0  # CREDENTIALS_RETRY_SECONDS' default


def refuse(h):
    requests.post(f"{h.sandbox_url}/sandbox/tokens/refuse", json={}, timeout=5).raise_for_status()


def accept(h):
    requests.delete(f"{h.sandbox_url}/sandbox/tokens/refuse", timeout=5).raise_for_status()


def create(h, card=OTP_CARD, pre_auth=False, amount=1100):
    body = CheckoutIn.model_validate({
        "merchant_order_reference": f"cred-{uuid.uuid4().hex[:12]}", "amount": {"value": amount, "currency": "INR"},
        "pre_auth": pre_auth,
        "card": {"number": card, "name": "Kevin Bob", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}})
    return h.service.create(body)[0]


def run_until(h, checkout_id, state):
    """Run the queued steps one at a time until the checkout is in ``state``."""
    for _ in range(20):
        if h.state(checkout_id) == state:
            return
        step, cid = h.queue.pop(0)
        runner.run(h.deps, step, cid, "test-task")
    raise AssertionError(f"never reached {state}: {h.state(checkout_id)}")


def waits(h, checkout_id, state):
    """The checkout is still in ``state``, waiting for credentials, its failures uncounted."""
    c = h.deps.repo.get(checkout_id)
    assert c.state == state and c.error_code == "CREDENTIALS_REJECTED"
    assert c.step_failures == 0
    left = (c.next_due_at - h.clock()).total_seconds()
    assert 0 < left <= RETRY


def retried_later(h, times=3):
    """Each due time comes and the step meets the refusal again."""
    for _ in range(times):
        h.clock.advance(RETRY + 1)
        h.run_due()


def resumed(h):
    accept(h)
    h.clock.advance(RETRY + 1)
    h.run_due()


def test_a_refused_order_step_waits_and_completes_when_the_credentials_work(harness):
    h = harness
    refuse(h)
    row = create(h)
    h.drain()
    waits(h, row.id, "NEW")
    retried_later(h)
    waits(h, row.id, "NEW")
    resumed(h)
    assert h.state(row.id) == "AWAITING_OTP"
    h.service.submit_otp(row.id, "123456")
    h.drain()
    assert h.state(row.id) == "COMPLETED"


def test_a_refused_payment_step_waits_and_pays_once_when_the_credentials_work(harness):
    h = harness
    row = create(h)
    run_until(h, row.id, "CARD_CHECKED")
    refuse(h)
    h.drain()
    waits(h, row.id, "CARD_CHECKED")
    retried_later(h)
    resumed(h)
    c = h.deps.repo.get(row.id)
    assert c.state == "AWAITING_OTP"
    payments = [e for e in requests.get(f"{h.sandbox_url}/sandbox/ledger", params={"order_id": c.plural_order_id},
                                         timeout=5).json()["entries"] if e["kind"] == "PAYMENT_CREATED"]
    assert len(payments) == 1


def test_a_refused_otp_submission_waits_and_completes_when_the_credentials_work(harness):
    h = harness
    row = create(h)
    h.drain()
    refuse(h)
    h.service.submit_otp(row.id, "123456")
    h.drain()
    waits(h, row.id, "VERIFYING_OTP")
    resumed(h)
    assert h.state(row.id) == "COMPLETED"


def test_a_refused_poll_keeps_the_checkout_waiting_for_the_customer(harness):
    h = harness
    row = create(h, card=ACS_CARD)
    h.drain()
    assert h.state(row.id) == "AWAITING_REDIRECT"
    refuse(h)
    retried_later(h)
    waits(h, row.id, "AWAITING_REDIRECT")
    resumed(h)
    c = h.deps.repo.get(row.id)
    assert c.state == "AWAITING_REDIRECT" and c.polls > 0


def test_a_refused_cancel_waits_and_cancels_when_the_credentials_work(harness):
    h = harness
    row = create(h)
    h.drain()
    refuse(h)
    h.service.cancel(row.id)
    h.drain()
    waits(h, row.id, "CANCELLING")
    resumed(h)
    assert h.status(row.id) == "CANCELLED"


def test_a_refused_capture_waits_and_captures_once_when_the_credentials_work(harness):
    h = harness
    row = create(h, pre_auth=True, amount=5000)
    h.drain()
    h.service.submit_otp(row.id, "123456")
    h.drain()
    assert h.state(row.id) == "AUTHORIZED"
    refuse(h)
    h.service.deliver(row.id, None)
    h.drain()
    waits(h, row.id, "CAPTURING")
    retried_later(h)
    resumed(h)
    c = h.deps.repo.get(row.id)
    assert c.state == "COMPLETED" and c.captured_amount == 5000


def capture_refused_past_the_wait(h):
    """A delivered pre-auth checkout whose capture met refused credentials for 80 s, past a 60 s wait."""
    h.redeps(settings=h.deps.settings.model_copy(update={"credentials_wait_seconds": 60.0}))
    row = create(h, pre_auth=True, amount=5000)
    h.drain()
    h.service.submit_otp(row.id, "123456")
    h.drain()
    refuse(h)
    h.service.deliver(row.id, None)
    h.drain()
    retried_later(h, times=5)
    return row


def test_a_checkout_that_waited_too_long_needs_attention_with_the_reason(harness):
    h = harness
    row = capture_refused_past_the_wait(h)
    c = h.deps.repo.get(row.id)
    assert c.state == "NEEDS_ATTENTION" and c.attention_reason.startswith("credentials_rejected")
    assert c.attention_from == "CAPTURING" and c.error_code == "CREDENTIALS_REJECTED"


def test_a_refused_offer_check_waits_and_goes_on_when_the_credentials_work(harness):
    from tests.saga.test_emi_checkouts import body, debit

    h = harness
    refuse(h)
    row, _ = h.service.create(CheckoutIn.model_validate(body("DEBIT_EMI", debit(), "7", "1", 1200000)))
    h.drain()
    waits(h, row.id, "QUOTING")
    resumed(h)
    assert h.state(row.id) == "AWAITING_REDIRECT"


def test_a_refused_refund_waits_uncounted_and_is_processed_when_the_credentials_work(harness):
    from orchestrator.saga.steps.refund import get_refund

    h = harness
    row = create(h, amount=3000)
    h.drain()
    h.service.submit_otp(row.id, "123456")
    h.drain()
    refuse(h)
    r, _ = h.service.refund(row.id, None, None)
    h.drain()
    retried_later(h, times=10)  # more than STEP_MAX_ATTEMPTS tries
    r = get_refund(h.deps, r.id)
    assert r.state == "REQUESTED" and r.error_code == "CREDENTIALS_REJECTED" and r.failures == 0
    resumed(h)
    assert get_refund(h.deps, r.id).state == "PROCESSED"


def test_a_checkout_that_needed_attention_for_the_credentials_goes_back_once_they_work(harness):
    h = harness
    row = capture_refused_past_the_wait(h)
    assert h.state(row.id) == "NEEDS_ATTENTION"
    accept(h)
    h.clock.advance(h.deps.settings.attention_poll_seconds + 1)
    h.run_due()
    c = h.deps.repo.get(row.id)
    assert c.state == "COMPLETED" and c.captured_amount == 5000
    assert [t.to_state for t in h.deps.repo.history(c.id)][-3:] == ["NEEDS_ATTENTION", "CAPTURING", "COMPLETED"]


def test_a_checkout_that_needs_attention_for_another_reason_stays_there(harness):
    from orchestrator.domain.saga import Fact, Source

    h = harness
    row = create(h)
    h.drain()
    h.deps.engine.apply(row.id, Fact.GAVE_UP, Source.TIMER, "card_details failed 8 times: ServerError")
    refuse(h)
    h.clock.advance(h.deps.settings.attention_poll_seconds + 1)
    h.run_due()
    accept(h)
    h.clock.advance(h.deps.settings.attention_poll_seconds + 1)
    h.run_due()
    assert h.state(row.id) == "NEEDS_ATTENTION"

"""The saga's steps with real collaborators: migrated SQLite, fakeredis vault, the sandbox over HTTP."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from orchestrator.saga import runner, steps
from orchestrator.domain.saga import Step
from orchestrator.merchant.schemas import CheckoutIn
from tests.conftest import ledger

OTP_CARD, ACS_CARD, DECLINE_CARD, OTP_REFUSED = (
    "4012001037141112", "5555555555554444", "4000000000000002", "4111111111111111")


def checkout(h, card=OTP_CARD, amount=1100, pre_auth=False, reference=None):
    body = CheckoutIn.model_validate({
        "merchant_order_reference": reference or f"ord-{uuid.uuid4().hex[:12]}",
        "amount": {"value": amount, "currency": "INR"}, "pre_auth": pre_auth,
        "card": {"number": card, "name": "Kevin Bob", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}})
    row, created = h.service.create(body)
    assert created
    h.drain()
    return h.deps.repo.get(row.id)


def received(h, amount=1500, cvv="123"):
    """A checkout just received (its first step queued, not run)."""
    body = CheckoutIn.model_validate({
        "amount": {"value": amount, "currency": "INR"},
        "card": {"number": OTP_CARD, "name": "K", "cvv": cvv, "expiry_month": "12", "expiry_year": "30"}})
    return h.service.create(body)[0]


def kinds(h, c):
    return [e["kind"] for e in ledger(h.sandbox_url, c.plural_order_id)]


def path(h, c):
    return [t.to_state for t in h.deps.repo.history(c.id)]


def test_native_otp_checkout_completes(harness):
    h = harness
    c = checkout(h)
    assert c.state == "AWAITING_OTP" and c.native_otp and c.otp_attempts_left == 3
    h.service.submit_otp(c.id, "123456")
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "COMPLETED" and c.captured_amount == 1100
    assert path(h, c) == ["NEW", "ORDER_CREATED", "CARD_CHECKED", "PAYMENT_CREATED", "AWAITING_OTP",
                          "VERIFYING_OTP", "COMPLETED"]
    assert kinds(h, c) == ["ORDER_CREATED", "PAYMENT_CREATED", "AUTHORIZED", "CAPTURED"]


def test_pre_auth_checkout_waits_authorized(harness):
    h = harness
    c = checkout(h, pre_auth=True, amount=5000)
    h.service.submit_otp(c.id, "123456")
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "AUTHORIZED" and c.authorized_amount == 5000 and c.captured_amount == 0
    # the only thing due is the hold's expiry: 7 days after authorization less the 6-hour margin
    assert c.next_due_at == c.capture_deadline_at
    assert (c.capture_deadline_at - c.authorized_at).total_seconds() == 7 * 86400 - 6 * 3600


def test_wrong_otp_keeps_waiting_with_fewer_attempts_then_right_one_completes(harness):
    h = harness
    c = checkout(h)
    h.service.submit_otp(c.id, "000000")
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "AWAITING_OTP" and c.otp_attempts_left == 2 and c.error_code == "INVALID_OTP"
    h.service.submit_otp(c.id, "123456")
    h.drain()
    assert h.state(c.id) == "COMPLETED"


def test_too_many_wrong_otps_fail_the_checkout(harness):
    h = harness
    c = checkout(h)
    for _ in range(3):
        h.service.submit_otp(c.id, "000000")
        h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "FAILED" and c.error_code == "USER_AUTHENTICATION_FAILED"


def test_an_otp_submitted_after_the_payment_expired_fails_the_checkout_payment_expired(harness):
    import requests

    h = harness
    if h.mode == "lenient":
        pytest.skip("the lenient sandbox lets nothing expire")
    c = checkout(h)
    requests.post(f"{h.sandbox_url}/sandbox/clock", json={"advance": 901}, timeout=5).raise_for_status()
    h.service.submit_otp(c.id, "123456")
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "FAILED" and c.error_code == "PAYMENT_EXPIRED"
    assert h.service.view(c)["status"] == "FAILED"


def test_declined_card_fails_and_its_data_is_gone(harness):
    h = harness
    c = checkout(h, card=DECLINE_CARD)
    assert c.state == "FAILED" and c.error_code == "PAYMENT_DECLINED"
    assert h.deps.vault.card(c.id) is None


def test_card_without_native_otp_waits_for_the_bank_page_and_polling_completes_it(harness):
    h = harness
    c = checkout(h, card=ACS_CARD)
    assert c.state == "AWAITING_REDIRECT" and c.challenge_url
    token = parse_qs(urlparse(c.challenge_url).query)["token"][0]
    requests.post(f"{h.sandbox_url}/sandbox/acs/{c.plural_payment_id}/approve", data={"token": token},
                  allow_redirects=False, timeout=5)
    h.clock.advance(1)
    h.run_due()
    assert h.state(c.id) == "COMPLETED"


def test_refused_otp_generation_falls_back_to_the_bank_page(harness):
    c = checkout(harness, card=OTP_REFUSED)
    assert c.state == "AWAITING_REDIRECT"
    assert "bank page" in harness.deps.repo.history(c.id)[-1].reason


def test_a_generate_otp_whose_answer_was_lost_is_resolved_as_sent(harness):
    """A worker died after Plural generated the OTP but before the saga recorded it: the rerun's
    second Generate OTP (refused as already generated, or answered with a fresh OTP) leaves the
    checkout waiting for the OTP, never on the bank page, and the OTP completes it."""
    h = harness
    row = received(h)
    for _ in range(3):  # create order, card details, create payment: up to the Generate OTP step
        step, checkout_id = h.queue.pop(0)
        runner.run(h.deps, step, checkout_id, "t")
    (pending,) = h.queue
    c = h.deps.repo.get(row.id)
    assert pending[0] == Step.GENERATE_OTP and c.state == "PAYMENT_CREATED"
    h.deps.repo.begin_attempt(c.id, Step.GENERATE_OTP.value, c.plural_payment_id, "dead-task")
    h.deps.plural.generate_otp(c.plural_payment_id)  # reached Plural; the answer died with the worker
    h.drain()
    c = h.deps.repo.get(row.id)
    assert c.state == "AWAITING_OTP" and c.otp_attempts_left == 3 and c.otp_resend_at is not None
    assert all(a.outcome in ("succeeded", "failed") for a in h.deps.repo.attempts(c.id, Step.GENERATE_OTP.value))
    h.service.submit_otp(c.id, "123456")
    h.drain()
    assert h.state(c.id) == "COMPLETED"


def _seed_device_info():
    from tests.seeds import find

    return find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "CARD")[0]["payments"][0][
        "device_info"]


def test_the_merchants_device_info_is_sent_with_the_payment(harness):
    h = harness
    device = _seed_device_info()
    row, _ = h.service.create(CheckoutIn.model_validate({
        "amount": {"value": 1500, "currency": "INR"}, "device_info": device,
        "card": {"number": OTP_CARD, "name": "K", "cvv": "123", "expiry_month": "12", "expiry_year": "30"}}))
    assert h.deps.repo.get(row.id).device_info == device
    h.drain()
    c = h.deps.repo.get(row.id)
    (made,) = [e for e in ledger(h.sandbox_url, c.plural_order_id) if e["kind"] == "PAYMENT_CREATED"]
    assert made["device_info"] == device


def test_no_device_info_is_sent_when_the_merchant_gave_none(harness):
    c = checkout(harness)
    (made,) = [e for e in ledger(harness.sandbox_url, c.plural_order_id) if e["kind"] == "PAYMENT_CREATED"]
    assert c.device_info is None and "device_info" not in made


def test_customer_who_never_finishes_is_cancelled_at_the_deadline(harness):
    h = harness
    c = checkout(h, card=ACS_CARD)
    h.clock.advance(h.deps.settings.customer_action_timeout + 1)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert h.status(c.id) == "CANCELLED" and c.cancel_reason == "CUSTOMER_TIMEOUT"
    if h.mode == "lenient":
        assert c.state == "CANCELLED" and "CANCELLED" in kinds(h, c)
    else:  # Plural refuses to cancel an unpaid order: cancelled for the merchant, the payment watched
        assert c.state == "WATCHING" and "CANCELLED" not in kinds(h, c)


def test_merchant_cancel_while_waiting_for_otp(harness):
    h = harness
    c = checkout(h)
    h.service.cancel(c.id)
    h.drain()
    assert h.status(c.id) == "CANCELLED"
    assert h.state(c.id) == ("CANCELLED" if h.mode == "lenient" else "WATCHING")


def test_unknown_payment_outcome_is_resolved_by_get_order_without_paying_twice(harness):
    h = harness
    from orchestrator.plural import PluralClient

    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "/payments$", "seconds": 0.8, "count": 2}]}, timeout=5)
    row = received(h, amount=2000)
    patient = h.deps.plural
    h.deps.plural = PluralClient.from_settings(h.deps.settings, read_timeout=0.3, max_attempts=2,
                                               backoff_base=0.01, backoff_cap=0.01)
    h.drain()
    h.deps.plural = patient
    c = h.deps.repo.get(row.id)
    assert c.state == "CARD_CHECKED"  # the payment call timed out: outcome unknown
    attempts = h.deps.repo.attempts(c.id, Step.CREATE_PAYMENT.value)
    assert [a.outcome for a in attempts] == ["unknown"]
    h.clock.advance(5)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert c.state == "AWAITING_OTP"
    assert kinds(h, c).count("PAYMENT_CREATED") == 1
    assert [a.outcome for a in h.deps.repo.attempts(c.id, Step.CREATE_PAYMENT.value)] == ["succeeded"]


def test_crash_between_call_and_record_is_reconciled_by_reference(harness):
    """A worker died after Plural created the order but before the saga recorded it."""
    h = harness
    row = received(h)
    h.queue.clear()
    h.deps.repo.begin_attempt(row.id, Step.CREATE_ORDER.value, row.merchant_order_reference, "dead-task")
    from orchestrator.plural.models import Amount, CreateOrderRequest

    made = h.deps.plural.create_order(CreateOrderRequest(merchant_order_reference=row.merchant_order_reference,
                                                         order_amount=Amount(value=1500)))
    runner.run(h.deps, Step.CREATE_ORDER, row.id)
    c = h.deps.repo.get(row.id)
    assert c.state == "ORDER_CREATED" and c.plural_order_id == made.order_id
    assert [a.outcome for a in h.deps.repo.attempts(c.id, Step.CREATE_ORDER.value)] == ["succeeded"]
    assert kinds(h, c) == ["ORDER_CREATED"]


def test_a_duplicate_step_delivery_does_nothing(harness):
    h = harness
    c = checkout(h)
    before = len(h.deps.repo.history(c.id))
    runner.run(h.deps, Step.CREATE_ORDER, c.id)
    runner.run(h.deps, Step.CREATE_PAYMENT, c.id)
    assert len(h.deps.repo.history(c.id)) == before
    assert kinds(h, c).count("PAYMENT_CREATED") == 1


def test_a_late_signal_cannot_move_a_finished_saga_backwards(harness):
    h = harness
    c = checkout(h)
    h.service.submit_otp(c.id, "123456")
    h.drain()
    from orchestrator.domain.saga import Fact, Source

    assert h.deps.engine.apply(c.id, Fact.PLURAL_PAYMENT_FAILED, Source.WEBHOOK, "late PAYMENT_FAILED") is None
    assert h.state(c.id) == "COMPLETED"
    assert h.deps.repo.history(c.id)[-1].to_state == "COMPLETED"


def test_card_data_never_reaches_the_database_or_the_queue(harness):
    h = harness
    c = checkout(harness, card=ACS_CARD)
    raw = h.db_path.read_bytes() + (h.db_path.parent / "saga.db-wal").read_bytes()
    assert ACS_CARD.encode() not in raw and b"5555 5555" not in raw
    assert all(item[1] == c.id for item in h.queue)


def test_card_is_encrypted_in_the_vault_and_dropped_after_payment(harness):
    h = harness
    row = received(h, cvv="987")
    stored = [h.redis.get(k) for k in h.redis.keys("vault:card:*")]
    assert stored and all(OTP_CARD.encode() not in v and b"987" not in v for v in stored)
    assert h.redis.ttl(f"vault:card:{row.id}") > 0
    h.drain()
    assert h.redis.get(f"vault:card:{row.id}") is None


def test_a_checkout_that_ends_holds_no_card_and_no_otp(harness):
    h = harness
    row = received(h)
    h.deps.vault.put_otp(row.id, "123456", 300)  # an OTP submitted as the checkout is cancelled
    h.service.cancel(row.id)
    h.drain()
    assert h.deps.repo.get(row.id).state == "CANCELLED"
    assert h.redis.keys(f"vault:*:{row.id}") == []


def test_sweep_enqueues_each_due_row_once_even_when_two_sweeps_race(harness):
    from orchestrator.saga.sweeps import sweep_due

    h = harness
    c = checkout(h, card=ACS_CARD)
    h.clock.advance(1)
    first = sweep_due(h.deps)
    second = sweep_due(h.deps)
    assert (first, second) == (1, 0)
    assert h.queue == [(Step.POLL_ORDER, c.id)]


def test_lost_message_is_re_driven_after_the_lease(harness):
    h = harness
    row = received(h)
    h.queue.clear()  # the create_order message is lost
    h.clock.advance(h.deps.settings.step_lease_seconds + 1)
    h.run_due()
    assert h.state(row.id) == "AWAITING_OTP"


@pytest.mark.parametrize("status", [503])
def test_gateway_outage_backs_off_and_recovers(harness, status):
    h = harness
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "error", "path": "/orders$", "statuses": [status], "count": 6}]}, timeout=5)
    row = received(h)
    h.drain()
    c = h.deps.repo.get(row.id)
    assert c.state == "NEW" and c.step_failures == 1 and c.error_code == "INTERNAL_ERROR"
    h.clock.advance(1)
    h.run_due()
    assert h.state(row.id) == "AWAITING_OTP"


def test_concurrent_payment_step_that_finds_the_card_gone_follows_plural(harness):
    """Another run of the step made the payment and dropped the card: follow Plural, do not cancel."""
    from orchestrator.plural.models import (
        Amount, CardDetails, CreatePaymentRequest, PaymentOption, PaymentRequest)

    h = harness
    row = received(h)
    h.queue.clear()
    runner.run(h.deps, Step.CREATE_ORDER, row.id)
    runner.run(h.deps, Step.CARD_DETAILS, row.id)
    h.queue.clear()
    c = h.deps.repo.get(row.id)
    assert c.state == "CARD_CHECKED"
    h.deps.plural.create_payment(c.plural_order_id, CreatePaymentRequest(payments=[PaymentRequest(
        merchant_payment_reference=c.merchant_payment_reference, payment_method="CARD",
        payment_amount=Amount(value=1500), payment_option=PaymentOption(card_details=CardDetails(
            name="K", card_number=OTP_CARD, cvv="123", expiry_month="12", expiry_year="30")))]))
    h.deps.vault.drop_card(c.id)
    runner.run(h.deps, Step.CREATE_PAYMENT, c.id)
    h.drain()
    assert h.state(c.id) == "AWAITING_OTP"
    assert kinds(h, c).count("PAYMENT_CREATED") == 1


def test_card_data_that_expired_before_payment_cancels_the_order(harness):
    h = harness
    row = received(h)
    h.queue.clear()
    runner.run(h.deps, Step.CREATE_ORDER, row.id)
    runner.run(h.deps, Step.CARD_DETAILS, row.id)
    h.queue.clear()
    h.deps.vault.drop_card(row.id)
    runner.run(h.deps, Step.CREATE_PAYMENT, row.id)
    h.drain()
    c = h.deps.repo.get(row.id)
    assert c.state == "CANCELLED" and c.error_code == "CARD_DATA_EXPIRED"


def test_a_cancel_whose_answer_was_lost_is_confirmed_by_get_order(harness):
    from orchestrator.plural import PluralClient

    h = harness
    c = checkout(h, pre_auth=True)
    h.service.submit_otp(c.id, "123456")
    h.drain()
    assert h.state(c.id) == "AUTHORIZED"
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "/cancel$", "seconds": 0.8, "count": 1}]}, timeout=5)
    patient = h.deps.plural
    h.deps.plural = PluralClient.from_settings(h.deps.settings, read_timeout=0.3, max_attempts=1)
    h.service.cancel(c.id)
    h.drain()
    h.deps.plural = patient
    assert h.state(c.id) == "CANCELLING"
    assert [a.outcome for a in h.deps.repo.attempts(c.id, Step.CANCEL_ORDER.value)] == ["unknown"]
    h.clock.advance(5)
    h.run_due()
    assert h.state(c.id) == "CANCELLED"
    assert [a.outcome for a in h.deps.repo.attempts(c.id, Step.CANCEL_ORDER.value)] == ["succeeded"]
    assert kinds(h, c).count("CANCELLED") == 1


def test_a_gateway_step_costs_one_read_and_two_write_transactions(harness):
    """One read (the row, its attempts, when it entered its state), the write-ahead that also
    takes the run's claim, and one transaction that records the call's outcome and moves the
    state (the move gives the claim back: no release)."""
    from sqlalchemy import event

    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step
    from orchestrator.merchant.schemas import CheckoutIn

    h = harness
    row, _ = h.service.create(CheckoutIn.model_validate({
        "amount": {"value": 5000, "currency": "INR"},
        "card": {"number": "4012001037141112", "name": "K", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}}))
    h.queue.clear()
    writes, reads = [], []
    count_writes = lambda *_a: writes.append(1)  # noqa: E731
    count_reads = lambda *_a: reads.append(1)  # noqa: E731
    event.listen(h.deps.repo.engine, "begin", count_writes)
    event.listen(h.deps.repo.read_engine, "begin", count_reads)
    try:
        runner.run(h.deps, Step.CREATE_ORDER, row.id, "t")
    finally:
        event.remove(h.deps.repo.engine, "begin", count_writes)
        event.remove(h.deps.repo.read_engine, "begin", count_reads)
    c = h.deps.repo.get(row.id)
    assert c.state == "ORDER_CREATED" and c.claim_token is None
    assert [a.outcome for a in h.deps.repo.attempts(row.id)] == ["succeeded"]
    assert (len(reads), len(writes)) == (1, 2)


def test_a_run_for_a_state_already_left_writes_nothing(harness):
    """A duplicate delivery of a step whose state the checkout has left reads and stops."""
    from sqlalchemy import event

    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step
    from orchestrator.merchant.schemas import CheckoutIn

    h = harness
    row, _ = h.service.create(CheckoutIn.model_validate({
        "amount": {"value": 5000, "currency": "INR"},
        "card": {"number": "4012001037141112", "name": "K", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}}))
    h.queue.clear()
    runner.run(h.deps, Step.CREATE_ORDER, row.id, "t")
    before = h.deps.repo.get(row.id)
    writes = []
    count_writes = lambda *_a: writes.append(1)  # noqa: E731
    event.listen(h.deps.repo.engine, "begin", count_writes)
    try:
        runner.run(h.deps, Step.CREATE_ORDER, row.id, "t-again")
    finally:
        event.remove(h.deps.repo.engine, "begin", count_writes)
    assert writes == []
    assert h.deps.repo.get(row.id).version == before.version
    assert len(h.deps.repo.attempts(row.id)) == 1


# --- chained steps: a task goes on with the next step when it is ready at once -----------------


def test_a_task_runs_the_steps_that_are_ready_at_once_back_to_back(harness):
    """With STEP_CHAIN, one delivery of create_order takes a card checkout to AWAITING_OTP with no
    message in between; each step still writes ahead, is claimed afresh and leaves its history."""
    from orchestrator.saga import runner

    h = harness
    h.redeps(settings=h.deps.settings.model_copy(update={"step_chain": 4}))
    c = received(h)
    (first,) = h.queue
    h.queue.clear()
    runner.run(h.deps, first[0], first[1], "t")
    assert h.state(c.id) == "AWAITING_OTP" and h.queue == []
    c = h.deps.repo.get(c.id)
    assert path(h, c)[-4:] == ["ORDER_CREATED", "CARD_CHECKED", "PAYMENT_CREATED", "AWAITING_OTP"]
    assert [(a.step, a.outcome) for a in h.deps.repo.attempts(c.id)] == [
        ("create_order", "succeeded"), ("card_details", "succeeded"), ("create_payment", "succeeded"),
        ("generate_otp", "succeeded")]
    assert c.claim_token is None
    assert kinds(h, c) == ["ORDER_CREATED", "PAYMENT_CREATED"]  # one order, one payment at Plural


def test_a_chain_is_bounded_and_hands_the_rest_to_the_queue(harness):
    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step

    h = harness
    h.redeps(settings=h.deps.settings.model_copy(update={"step_chain": 1}))
    c = received(h)
    h.queue.clear()
    runner.run(h.deps, Step.CREATE_ORDER, c.id, "t")
    assert h.state(c.id) == "CARD_CHECKED" and h.queue == [(Step.CREATE_PAYMENT, c.id)]


def test_a_chain_stops_where_another_run_took_the_checkout(harness, monkeypatch):
    """A second run that claims the checkout between two chained steps wins: the chain stops at
    its first write and nothing is called twice."""
    from orchestrator.saga import runner, steps
    from orchestrator.domain.saga import Step
    from orchestrator.store.claims import Claim

    h = harness
    h.redeps(settings=h.deps.settings.model_copy(update={"step_chain": 4}))
    c = received(h)
    h.queue.clear()
    real = steps.card_details

    def card_details_after_a_rival(d, run, row):
        # a rival run (a redelivery, the sweep) takes the checkout just as the chain gets here
        rival = Claim(h.deps.repo.get(row.id).version, 60)
        h.deps.repo.begin_attempt(row.id, Step.CARD_DETAILS.value, None, "rival", claim=rival)
        return real(d, run, row)

    monkeypatch.setitem(steps.STEPS, Step.CARD_DETAILS, card_details_after_a_rival)
    runner.run(h.deps, Step.CREATE_ORDER, c.id, "t")
    assert h.state(c.id) == "ORDER_CREATED"
    assert [a.task_id for a in h.deps.repo.attempts(c.id, Step.CARD_DETAILS.value)] == ["rival"]


def test_an_order_plural_does_not_know_is_resolved_not_looped(harness, monkeypatch):
    """Get Order answering 404 for our order (a gateway that lost it) is nothing a retry can
    change: the checkout NEEDS_ATTENTION with ORDER_NOT_FOUND, and polling it later raises nothing."""
    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step
    from orchestrator.plural import errors

    h = harness
    c = checkout(h)
    assert c.state == "AWAITING_OTP"

    def unknown(order_id, *_a, **_k):
        raise errors.NotFound(f"no order {order_id}", status=404, code="ORDER_NOT_FOUND")

    monkeypatch.setattr(h.deps.plural, "get_order", unknown)
    runner.run(h.deps, Step.POLL_ORDER, c.id, "t")
    row = h.deps.repo.get(c.id)
    assert row.state == "NEEDS_ATTENTION" and row.error_code == "ORDER_NOT_FOUND"
    assert "does not know order" in row.attention_reason
    runner.run(h.deps, Step.POLL_ORDER, c.id, "t2")  # the attention poll: no exception, still visible
    assert h.state(c.id) == "NEEDS_ATTENTION"


# --- Plural's answers are checked against the checkout before they move it (issue 22, item 2) ---


def foreign_order(h, reference, amount=100, pre_auth=True):
    """An order at Plural under our reference that is not the one our checkout would make."""
    from orchestrator.plural.models import Amount, CreateOrderRequest

    return h.deps.plural.create_order(CreateOrderRequest(merchant_order_reference=reference,
                                                         order_amount=Amount(value=amount), pre_auth=pre_auth))


def altered(order, change):
    from orchestrator.plural.models import Order

    data = order.model_dump(mode="json", exclude_none=True)
    change(data)
    return Order.model_validate(data)


def mismatched(h, c):
    c = h.deps.repo.get(c.id)
    assert c.state == "NEEDS_ATTENTION" and c.error_code == "GATEWAY_MISMATCH", (c.state, c.error_code)
    assert "COMPLETED" not in path(h, c)
    return c


def test_a_foreign_order_returned_for_our_reference_is_never_adopted(harness):
    """Plural answers a create with our reference by the order it already has: a 100-paise
    pre-auth order is not a 500000-paise checkout's order."""
    h = harness
    reference = f"ord-{uuid.uuid4().hex[:12]}"
    foreign = foreign_order(h, reference)
    c = checkout(h, amount=500000, reference=reference)
    if h.mode == "strict":  # 422 DUPLICATE_REQUEST: the order Plural holds is looked up on the next run
        assert c.state == "NEW"
        h.clock.advance(5)
        h.run_due()
    c = mismatched(h, c)
    assert c.plural_order_id is None
    assert "order_amount is 100 at Plural, 500000 here" in c.error_message
    assert "pre_auth is True at Plural, False here" in c.error_message
    assert [e["kind"] for e in ledger(h.sandbox_url, foreign.order_id)] == ["ORDER_CREATED"]


def test_an_order_plural_already_holds_for_our_reference_is_adopted_when_it_matches(harness):
    """A restored database, or an answer lost before its attempt was written: Plural refuses the
    repeated reference (strict) or replays it (lenient); either way the matching order is ours."""
    h = harness
    reference = f"ord-{uuid.uuid4().hex[:12]}"
    held = foreign_order(h, reference, amount=1100, pre_auth=False)
    c = checkout(h, amount=1100, reference=reference)
    h.clock.advance(5)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert c.plural_order_id == held.order_id and c.state == "AWAITING_OTP"
    h.service.submit_otp(c.id, "123456")
    h.drain()
    assert h.state(c.id) == "COMPLETED"


def test_a_foreign_order_found_by_reference_after_an_unknown_outcome_is_not_adopted_even_when_polled(harness):
    from orchestrator.saga import runner

    h = harness
    row = received(h, amount=1500)
    h.queue.clear()
    h.deps.repo.begin_attempt(row.id, Step.CREATE_ORDER.value, row.merchant_order_reference, "dead-task")
    foreign = foreign_order(h, row.merchant_order_reference, amount=1500, pre_auth=True)
    runner.run(h.deps, Step.CREATE_ORDER, row.id)
    c = mismatched(h, row)
    assert c.plural_order_id is None and c.attention_from == "NEW"
    assert "pre_auth is True at Plural, False here" in c.error_message
    h.clock.advance(h.deps.settings.attention_poll_seconds + 1)
    runner.run(h.deps, Step.POLL_ORDER, c.id, "attention-poll")  # looks the order up again
    c = mismatched(h, c)
    assert c.plural_order_id is None
    assert [e["kind"] for e in ledger(h.sandbox_url, foreign.order_id)] == ["ORDER_CREATED"]


def test_an_order_found_by_reference_that_another_checkout_holds_is_not_adopted(harness, monkeypatch):
    h = harness
    other = checkout(h, amount=1500)
    row = received(h, amount=1500)
    h.queue.clear()
    h.deps.repo.begin_attempt(row.id, Step.CREATE_ORDER.value, row.merchant_order_reference, "dead-task")
    theirs = altered(h.deps.plural.get_order(other.plural_order_id),
                     lambda o: o.update(merchant_order_reference=row.merchant_order_reference))
    monkeypatch.setattr(h.deps.plural, "get_order_by_reference", lambda _ref: theirs)
    runner.run(h.deps, Step.CREATE_ORDER, row.id)
    c = mismatched(h, row)
    assert c.plural_order_id is None
    assert f"order {other.plural_order_id} belongs to checkout {other.id}" in c.error_message
    assert h.deps.repo.get(other.id).state == other.state


def test_a_payment_answer_for_another_amount_needs_attention(harness, monkeypatch):
    h = harness
    row = received(h, amount=1500)
    h.queue.clear()
    runner.run(h.deps, Step.CREATE_ORDER, row.id)
    runner.run(h.deps, Step.CARD_DETAILS, row.id)
    make = h.deps.plural.create_payment

    def cheaper(order_id, request):
        return altered(make(order_id, request), lambda o: o["payments"][0]["payment_amount"].update(value=15))

    monkeypatch.setattr(h.deps.plural, "create_payment", cheaper)
    runner.run(h.deps, Step.CREATE_PAYMENT, row.id)
    c = mismatched(h, row)
    assert "payment_amount is 15 at Plural, 1500 here" in c.error_message
    assert "AWAITING_OTP" not in path(h, c) and "PAYMENT_CREATED" not in path(h, c)


def paid_less_than_asked(h, monkeypatch):
    """A 500000-paise bank-page checkout, approved, whose order Plural then reports paid 100."""
    c = checkout(h, card=ACS_CARD, amount=500000)
    assert c.state == "AWAITING_REDIRECT"
    token = parse_qs(urlparse(c.challenge_url).query)["token"][0]
    requests.post(f"{h.sandbox_url}/sandbox/acs/{c.plural_payment_id}/approve", data={"token": token},
                  allow_redirects=False, timeout=5)
    real = h.deps.plural.get_order

    def paid_less(order_id):
        def change(o):
            o["payments"][0]["payment_amount"]["value"] = 100
            for capture in o["payments"][0].get("capture_data") or []:
                capture["capture_amount"]["value"] = 100
        return altered(real(order_id), change)

    for client in {id(h.deps.plural): h.deps.plural, id(h.service.plural): h.service.plural}.values():
        monkeypatch.setattr(client, "get_order", paid_less)
    h.clock.advance(1)
    h.run_due()
    return c


def test_a_poll_reporting_another_payment_amount_never_completes_the_checkout(harness, monkeypatch):
    h = harness
    c = paid_less_than_asked(h, monkeypatch)
    c = mismatched(h, c)
    assert c.captured_amount == 0 and c.authorized_amount == 0
    assert "payment_amount is 100 at Plural, 500000 here" in c.error_message
    h.clock.advance(h.deps.settings.attention_poll_seconds + 1)
    h.run_due()  # the attention poll sees the same answer: still not completed
    mismatched(h, c)


def test_a_capture_answer_for_another_amount_needs_attention(harness, monkeypatch):
    h = harness
    c = checkout(h, pre_auth=True, amount=5000)
    h.service.submit_otp(c.id, "123456")
    h.drain()
    assert h.state(c.id) == "AUTHORIZED"
    capture = h.deps.plural.capture_order

    def captured_more(order_id, request):
        def change(o):
            for data in o["payments"][0].get("capture_data") or []:
                data["capture_amount"]["value"] = 4000
        return altered(capture(order_id, request), change)

    monkeypatch.setattr(h.deps.plural, "capture_order", captured_more)
    h.service.deliver(c.id, 3000)
    h.drain()
    c = mismatched(h, c)
    assert c.captured_amount == 0 and c.attention_from == "CAPTURING"
    assert "at Plural, 3000 here" in c.error_message


def test_a_step_that_crashes_in_a_waiting_state_is_counted_and_ends_visible_not_looped(harness, monkeypatch):
    """A defect or a poison answer in a step of a waiting state (no stall bound there) is a failure:
    after STEP_MAX_ATTEMPTS the checkout needs attention, naming the error."""
    from orchestrator.saga import runner, steps
    from orchestrator.domain.saga import Step

    h = harness
    c = checkout(h, card=ACS_CARD)  # waits on the bank page: polls run
    waiting = h.state(c.id)

    def crash(d, run, c):
        raise ValueError("an answer no step expected")

    monkeypatch.setitem(steps.STEPS, Step.POLL_ORDER, crash)
    for _ in range(h.deps.settings.step_max_attempts + 2):
        h.clock.advance(h.deps.settings.retry_backoff_cap + h.deps.settings.step_lease_seconds)
        h.run_due()
        h.drain()
    stuck = h.deps.repo.get(c.id)
    assert (stuck.state, stuck.attention_from, stuck.error_code) == ("NEEDS_ATTENTION", waiting, "ValueError")


def test_a_paid_checkout_shows_no_error_a_waiting_step_once_met(harness):
    """The poll of a bank-page payment met refused credentials (the checkout kept
    CREDENTIALS_REJECTED while it waited); once paid, the merchant sees no error."""
    from urllib.parse import parse_qs, urlparse

    from tests.saga.test_credentials_steps import accept, refuse

    h = harness
    c = checkout(h, card=ACS_CARD)
    refuse(h)
    try:
        h.clock.advance(20)
        h.run_due()
        assert h.deps.repo.get(c.id).error_code == "CREDENTIALS_REJECTED"
    finally:
        accept(h)
    token = parse_qs(urlparse(c.challenge_url).query)["token"][0]
    requests.post(f"{h.sandbox_url}/sandbox/acs/{c.plural_payment_id}/approve", data={"token": token},
                  allow_redirects=False, timeout=5)
    for _ in range(3):
        h.clock.advance(20)
        h.run_due()
        h.drain()
    done = h.deps.repo.get(c.id)
    assert (done.state, done.error_code, done.error_message) == ("COMPLETED", None, None)

"""The saga engine against the findings of issue 8: each test states one behaviour that failed on
the code before the engine (late events undoing a capture, overlapping runs, refusals retried
forever, an OTP sent twice, the history's ``from``), over SQLite, the vault and the sandbox in
both its strict and its lenient mode."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import requests

from orchestrator.saga import answers, runner
from orchestrator.domain.saga import Fact, Source, State, Step, may_cause
from orchestrator.store.models import Checkout
from orchestrator.store.claims import Claim, LostClaim
from orchestrator.saga.engine import Run
from orchestrator.plural import PluralClient
from orchestrator.merchant.refunds import refunds_of
from orchestrator.saga.steps.refund import get_refund
from orchestrator.inbound.webhooks import process_pending
from tests.conftest import at_once, ledger
from tests.saga.test_capture_refunds import authorized, kinds
from tests.saga.test_steps import checkout
from tests.inbound.test_webhooks import approve, order_json, signed, start


def faults(h, *rules):
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": list(rules)}, timeout=5).raise_for_status()


def impatient(h, read_timeout=0.3):
    return PluralClient.from_settings(h.deps.settings, read_timeout=read_timeout, max_attempts=1)


def deliver_webhook(h, event_type, data):
    """Receive and apply one signed webhook, without running the steps it may enqueue."""
    h.inbound.webhook(*signed(h, event_type, data))
    process_pending(h.deps)


# --- 1. a late event cannot undo a capture ---------------------------------------------------

@pytest.mark.parametrize("event_type", ["ORDER_AUTHORIZED", "PAYMENT_FAILED"])
def test_a_late_event_during_a_capture_changes_nothing(harness, event_type):
    h = harness
    c = authorized(h)
    snapshot = order_json(h, c.plural_order_id)
    if event_type == "PAYMENT_FAILED":
        snapshot["status"], snapshot["payments"][0]["status"] = "ATTEMPTED", "FAILED"
    h.clock.advance(3 * 86400)
    h.service.deliver(c.id, None)
    deliver_webhook(h, event_type, snapshot)
    during = h.deps.repo.get(c.id)
    assert during.state == "CAPTURING"
    assert (during.authorized_at, during.capture_deadline_at) == (c.authorized_at, c.capture_deadline_at)
    h.drain()
    done = h.deps.repo.get(c.id)
    assert done.state == "COMPLETED" and done.captured_amount == 5000
    assert [k for k in kinds(h, c) if k[0] == "CAPTURED"] == [("CAPTURED", 5000)]


def test_a_poll_that_still_sees_authorized_cannot_undo_a_capture(harness):
    h = harness
    c = authorized(h)
    stale = h.deps.plural.get_order(c.plural_order_id)
    h.service.deliver(c.id, None)
    assert answers.settle(h.deps, h.deps.repo.get(c.id), stale, "a slow poll", Source.POLL) is False
    assert h.state(c.id) == "CAPTURING"


def test_the_capture_deadline_runs_from_plurals_authorization_not_from_when_we_heard(harness):
    h = harness
    c = checkout(h, pre_auth=True)
    h.service.submit_otp(c.id, "123456")
    h.clock.advance(600)  # the worker hears of the authorization ten minutes late
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "AUTHORIZED"
    real_now = dt.datetime.now(dt.timezone.utc)
    assert abs((c.authorized_at.replace(tzinfo=dt.timezone.utc) - real_now).total_seconds()) < 30
    hold = dt.timedelta(days=h.deps.settings.hold_days, seconds=-h.deps.settings.hold_margin_seconds)
    assert c.capture_deadline_at == c.authorized_at + hold


# --- 2. runs own their checkout -------------------------------------------------------------

def test_a_second_delivery_while_a_run_holds_the_checkout_does_nothing(harness):
    h = harness
    c = authorized(h)
    h.service.deliver(c.id, None)
    h.queue.clear()
    token = h.deps.repo.claim(Checkout, c.id, 60)  # a first run, still working
    runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "second")
    assert h.state(c.id) == "CAPTURING" and h.deps.repo.attempts(c.id, Step.CAPTURE_ORDER.value) == []
    h.deps.repo.release(Checkout, c.id, token)
    runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "third")
    assert h.state(c.id) == "COMPLETED"


def test_a_run_that_lost_its_claim_cannot_write(harness):
    h = harness
    c = authorized(h)
    h.service.deliver(c.id, None)
    read = h.deps.repo.get(c.id)
    first = Claim(read.version, 10)
    h.deps.repo.begin_attempt(c.id, Step.CAPTURE_ORDER.value, c.merchant_capture_reference, "first", claim=first)
    h.clock.advance(11)  # the first run stalled past its lease; a second run takes over
    second = Claim(h.deps.repo.get(c.id).version, 10)
    h.deps.repo.begin_attempt(c.id, Step.CAPTURE_ORDER.value, c.merchant_capture_reference, "second", claim=second)
    assert first.token and second.token and first.token != second.token
    stale = Run(c.id, first, "first", State.CAPTURING)
    with pytest.raises(LostClaim):
        h.deps.engine.apply(c.id, Fact.CAPTURE_REFUSED, Source.STEP, "refused", run=stale)
    with pytest.raises(LostClaim):
        h.deps.repo.begin_attempt(c.id, Step.CAPTURE_ORDER.value, c.merchant_capture_reference, "first", claim=first)
    assert h.state(c.id) == "CAPTURING"


def test_a_run_that_read_before_another_runs_first_write_never_writes(harness):
    """Two runs read the same row; the second one's first write fails even once the first run's
    lease has run out: it decided from a row that is no longer there."""
    h = harness
    c = authorized(h)
    h.service.deliver(c.id, None)
    version = h.deps.repo.get(c.id).version
    early, late = Claim(version, 10), Claim(version, 10)
    h.deps.repo.begin_attempt(c.id, Step.CAPTURE_ORDER.value, c.merchant_capture_reference, "early", claim=early)
    h.clock.advance(11)
    with pytest.raises(LostClaim):
        h.deps.repo.begin_attempt(c.id, Step.CAPTURE_ORDER.value, c.merchant_capture_reference, "late", claim=late)
    with pytest.raises(LostClaim):
        h.deps.engine.apply(c.id, Fact.CAPTURE_REFUSED, Source.STEP, "refused",
                            run=Run(c.id, Claim(version, 10), "late", State.CAPTURING))
    assert not h.deps.repo.note(c.id, claim=Claim(version, 10), error_code="STALE")
    assert [a.task_id for a in h.deps.repo.attempts(c.id, Step.CAPTURE_ORDER.value)] == ["early"]
    assert h.state(c.id) == "CAPTURING" and h.deps.repo.get(c.id).error_code != "STALE"


def test_two_runs_of_one_payment_step_at_once_pay_once_and_never_fail_it(harness):
    from tests.saga.test_steps import received

    h = harness
    c = received(h)
    for _ in range(2):  # create the order and check the card: the payment step is next
        step, checkout_id = h.queue.pop(0)
        runner.run(h.deps, step, checkout_id, "t")
    assert h.state(c.id) == "CARD_CHECKED"
    h.queue.clear()
    faults(h, {"kind": "latency", "path": "/payments$", "seconds": 0.4, "count": 1})
    at_once(lambda: runner.run(h.deps, Step.CREATE_PAYMENT, c.id, "t"), 2)
    h.drain()
    assert h.status(c.id) == "AWAITING_OTP"
    assert kinds(h, h.deps.repo.get(c.id)).count(("PAYMENT_CREATED", 1500)) == 1


def test_a_duplicate_answered_in_progress_is_looked_up_not_taken_as_a_refusal(harness):
    """The first capture is still being answered when a re-drive repeats its reference: the
    strict sandbox answers 409; the engine looks the capture up instead of undoing it."""
    h = harness
    if h.mode != "strict":
        pytest.skip("the lenient sandbox has no requests in progress")
    c = authorized(h)
    h.service.deliver(c.id, None)
    h.queue.clear()
    faults(h, {"kind": "hang_after", "path": "/capture$", "seconds": 1.0, "count": 1})
    patient, h.deps.plural = h.deps.plural, impatient(h)
    runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "first")  # times out: outcome unknown, Plural captured
    runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "second")
    h.deps.plural = patient
    assert h.state(c.id) in ("CAPTURING", "COMPLETED")
    h.clock.advance(60)
    h.run_due()
    assert h.state(c.id) == "COMPLETED"
    assert [k for k in kinds(h, c) if k[0] == "CAPTURED"] == [("CAPTURED", 5000)]


# --- 3. no infinite loops ------------------------------------------------------------------

def stuck_capture(h):
    """A delivered hold whose capture Plural keeps answering 503, until the retry budget is spent."""
    c = authorized(h)
    faults(h, {"kind": "error", "path": "/capture$", "statuses": [503]})
    h.deps.plural = PluralClient.from_settings(h.deps.settings, max_attempts=1)
    h.service.deliver(c.id, None)
    for _ in range(h.deps.settings.step_max_attempts + 2):
        h.drain()
        h.clock.advance(h.deps.settings.retry_backoff_cap + h.deps.settings.step_lease_seconds)
        h.run_due()
    return c


def test_a_capture_that_keeps_failing_needs_attention_after_the_retry_budget(harness):
    h = harness
    c = stuck_capture(h)
    c = h.deps.repo.get(c.id)
    assert c.state == "NEEDS_ATTENTION" and c.attention_from == "CAPTURING"
    assert "capture_order failed" in c.attention_reason
    assert len(h.deps.repo.attempts(c.id, Step.CAPTURE_ORDER.value)) == h.deps.settings.step_max_attempts
    assert c.next_due_at is not None  # still reconciled, slowly


def test_needs_attention_follows_plural_once_it_answers_and_an_operator_can_retry(harness):
    h = harness
    c = stuck_capture(h)
    assert h.state(c.id) == "NEEDS_ATTENTION"
    faults(h)
    h.deps.engine.apply(c.id, Fact.OPERATOR_RETRY, Source.OPERATOR, "operator: retry")
    h.drain()
    assert h.state(c.id) == "COMPLETED"
    assert [(t.from_state, t.to_state, t.source) for t in h.deps.repo.history(c.id)][-2:] == [
        ("NEEDS_ATTENTION", "CAPTURING", "operator"), ("CAPTURING", "COMPLETED", "step")]


def test_a_refused_cancel_of_an_unpaid_order_is_watched_then_ends_when_the_payment_expires(harness):
    h = harness
    c = start(h)  # waiting on the bank page: a payment is open at Plural
    h.service.cancel(c.id)
    h.drain()
    assert h.status(c.id) == "CANCELLED"
    if h.mode == "lenient":
        return
    c = h.deps.repo.get(c.id)
    assert c.state == "WATCHING" and c.watch_until is not None
    assert h.service.cancel(c.id).state == "WATCHING"  # cancelling again is idempotent
    requests.put(f"{h.sandbox_url}/sandbox/config", json={"payment_expiry_seconds": 0.01}, timeout=5)
    h.clock.advance(10)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert c.state == "CANCELLED" and not c.finished_late and c.late_undo is None


def test_a_payment_completed_after_a_refused_cancel_is_refunded_automatically(harness):
    h = harness
    if h.mode != "strict":
        pytest.skip("the lenient sandbox cancels the open payment")
    c = start(h)
    h.service.cancel(c.id)
    h.drain()
    assert h.state(c.id) == "WATCHING"
    approve(h, c)  # the customer pays anyway
    h.clock.advance(10)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert (c.state, c.finished_late, c.late_undo) == ("CANCELLED", True, "REFUNDED")
    (refund,) = refunds_of(h.deps, c.id)
    assert refund.origin == "LATE_PAYMENT" and refund.amount_value == 3000 and refund.state == "PROCESSED"
    assert ("REFUNDED", 3000) in kinds(h, c)
    view = h.service.view(c)
    assert view["status"] == "CANCELLED" and view["late_undo"] == "REFUNDED"
    assert [r["origin"] for r in view["refunds"]] == ["LATE_PAYMENT"]


def test_a_pre_auth_hold_that_comes_after_a_refused_cancel_is_released(harness):
    h = harness
    if h.mode != "strict":
        pytest.skip("the lenient sandbox cancels the open payment")
    c = start(h, pre_auth=True)
    h.service.cancel(c.id)
    h.drain()
    assert h.state(c.id) == "WATCHING"
    approve(h, c)
    h.clock.advance(10)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert (c.state, c.finished_late, c.late_undo) == ("CANCELLED", True, "RELEASED")
    assert kinds(h, c)[-1][0] == "CANCELLED"


def watch_that_gives_up(h):
    """A cancel Plural refuses while a payment stays open (it never expires) until the watch ends."""
    requests.put(f"{h.sandbox_url}/sandbox/config", json={"payment_expiry_seconds": 0.0}, timeout=5)
    c = start(h)
    h.service.cancel(c.id)
    h.drain()
    h.clock.advance(h.deps.settings.watch_seconds + 1)
    h.run_due()
    return c


def test_a_late_payment_after_a_watch_gave_up_is_still_refunded_and_says_so(harness):
    h = harness
    if h.mode != "strict":
        pytest.skip("the lenient sandbox cancels the open payment")
    c = watch_that_gives_up(h)
    assert h.state(c.id) == "NEEDS_ATTENTION"
    approve(h, c)  # the customer pays after the watch gave up
    h.clock.advance(h.deps.settings.attention_poll_seconds + 1)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert (c.state, c.finished_late, c.late_undo) == ("CANCELLED", True, "REFUNDED")
    assert [r.origin for r in refunds_of(h.deps, c.id)] == ["LATE_PAYMENT"]


def test_a_watch_that_never_ends_needs_attention(harness):
    h = harness
    if h.mode != "strict":
        pytest.skip("the lenient sandbox cancels the open payment")
    c = watch_that_gives_up(h)
    assert h.state(c.id) == "NEEDS_ATTENTION"


# --- 4. an OTP whose answer never came is never sent again ----------------------------------

def test_an_otp_whose_answer_was_lost_is_not_sent_again(harness):
    h = harness
    c = checkout(h)
    faults(h, {"kind": "error", "path": "/otp/submit$", "statuses": [503], "count": 1})
    h.deps.plural = PluralClient.from_settings(h.deps.settings, max_attempts=1)
    h.service.submit_otp(c.id, "123456")
    h.drain()
    h.clock.advance(60)
    h.run_due()
    c = h.deps.repo.get(c.id)
    assert len(h.deps.repo.attempts(c.id, Step.SUBMIT_OTP.value)) == 1
    assert c.state == "AWAITING_OTP" and c.error_code == "OTP_UNCONFIRMED"
    h.service.submit_otp(c.id, "123456")
    h.drain()
    assert h.state(c.id) == "COMPLETED"


# --- 9 and 11: refunded amounts and the history ------------------------------------------

def settle_refunds_at_once(h, c, amounts=(1000, 2000, 3000, 4000)) -> bool:
    """Request refunds of ``c``, then mark them all PROCESSED from as many threads at once."""
    from orchestrator.domain.saga import RefundState
    from orchestrator.saga.steps.refund import move

    rows = [h.service.refund(c.id, amount, None)[0] for amount in amounts]
    h.queue.clear()
    for row in rows:
        move(h.deps, get_refund(h.deps, row.id), RefundState.PENDING)
    pending = iter([get_refund(h.deps, r.id) for r in rows])
    lock = threading.Lock()

    def settle_one():
        with lock:
            r = next(pending)
        return move(h.deps, r, RefundState.PROCESSED)

    return all(at_once(settle_one, len(rows)))


def test_concurrent_refund_settlements_never_lose_an_update(harness):
    c = authorized(harness, amount=10000, pre_auth=False)
    assert settle_refunds_at_once(harness, c)
    assert harness.deps.repo.get(c.id).refunded_amount == 10000


def test_the_history_names_where_each_move_came_from(harness):
    h = harness
    c = checkout(h)
    h.service.submit_otp(c.id, "123456")
    h.drain()
    history = h.deps.repo.history(c.id)
    assert history[0].from_state is None
    for before, after in zip(history, history[1:]):
        assert after.from_state == before.to_state != after.to_state
        assert may_cause(Source(after.source), State(after.from_state), State(after.to_state))
    assert [t.to_state for t in history][-1] == "COMPLETED"
    assert ("AWAITING_OTP", "VERIFYING_OTP", "merchant") in [(t.from_state, t.to_state, t.source) for t in history]


def test_the_checkout_json_shows_real_from_states(harness):
    h = harness
    c = checkout(h)
    view = h.service.view(h.deps.repo.get(c.id))
    assert all(step["from"] != step["to"] for step in view["history"])
    assert view["history"][1]["from"] == "NEW" and view["history"][1]["to"] == "ORDER_CREATED"


def test_the_ledger_of_every_test_checkout_shows_no_double_order(harness):
    h = harness
    c = checkout(h)
    assert [e["kind"] for e in ledger(h.sandbox_url, c.plural_order_id)].count("ORDER_CREATED") == 1


def test_an_operator_resolves_a_stuck_checkout_and_the_history_says_who(harness):
    from orchestrator.merchant.errors import CheckoutError

    h = harness
    c = stuck_capture(h)
    with pytest.raises(CheckoutError):
        h.service.operator(c.id, "resolve", "CAPTURING", who="asha")
    done = h.service.operator(c.id, "resolve", "CANCELLED", who="asha")
    assert done.state == "CANCELLING"  # Plural holds the money: the cancel step releases it
    last = h.deps.repo.history(c.id)[-1]
    assert (last.source, last.reason) == ("operator", "resolved as CANCELLED by asha: CANCELLING at Plural "
                                                      "(order AUTHORIZED)")
    with pytest.raises(CheckoutError):
        h.service.operator(c.id, "retry", who="asha")


def test_a_step_whose_runs_keep_dying_needs_attention_after_the_maximum_age(harness):
    """A poison message: every run of the capture dies before it can count a failure."""
    from tests.saga.test_saga_model import Crash, CrashingPlural

    h = harness
    c = authorized(h)
    h.service.deliver(c.id, None)
    h.queue.clear()
    patient = h.deps.plural
    for _ in range(3):  # within the maximum age: each run dies, nothing moves
        h.deps.plural = CrashingPlural(patient, "before")
        with pytest.raises(Crash):
            runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "dies")
        h.clock.advance(h.deps.settings.step_max_age_seconds / 4)
    h.deps.plural = patient
    assert h.state(c.id) == "CAPTURING"
    h.clock.advance(h.deps.settings.step_max_age_seconds / 2)
    runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "sweep")
    c = h.deps.repo.get(c.id)
    assert c.state == "NEEDS_ATTENTION" and "no progress in CAPTURING" in c.attention_reason
    assert [k for k in kinds(h, c) if k[0] == "CAPTURED"] == []

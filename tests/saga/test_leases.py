"""A run's claim lives as long as its process does (``orchestrator.saga.leases``): renewed while the
run lives, never past the run lease; a claim nobody renews lapses within one claim lease, and a
rival run takes the checkout over and settles the dead run's call by asking Plural."""

from __future__ import annotations

import datetime as dt
import time

from orchestrator.saga import runner
from orchestrator.domain.saga import Step
from orchestrator.store.models import Checkout, aware, utcnow
from orchestrator.store.claims import Claim
from orchestrator.saga.leases import Leases
from tests.saga.test_capture_refunds import authorized, kinds

CAPTURE = Step.CAPTURE_ORDER.value


def capturing(h):
    """A delivered pre-auth checkout: CAPTURING, its capture step not yet run."""
    c = authorized(h)
    h.service.deliver(c.id, None)
    h.queue.clear()
    return h.deps.repo.get(c.id)


def write_ahead(h, c, task_id):
    """A capture run's first write-ahead (its claim taken), its call never made: the run then
    stalls, or its process dies."""
    claim = Claim(h.deps.repo.get(c.id).version, h.deps.leases.lease_seconds)
    h.deps.repo.begin_attempt(c.id, CAPTURE, c.merchant_capture_reference, task_id, claim=claim)
    return claim


def claim_until(h, c):
    return aware(h.deps.repo.get(c.id).claim_until)


def about(a, b):
    """Equal but for the test clock's own running (it is wall time plus what a test advanced)."""
    return abs(a - b) < dt.timedelta(seconds=1)


def test_a_claim_its_process_renews_keeps_a_rival_out_past_the_lease(harness):
    h = harness
    c = capturing(h)
    lease = h.deps.leases.lease_seconds
    first = Claim(h.deps.repo.get(c.id).version, lease)
    with h.deps.leases.holding(Checkout, c.id, lambda: first.token):
        h.deps.repo.begin_attempt(c.id, CAPTURE, c.merchant_capture_reference, "first", claim=first)
        for _ in range(6):  # two whole leases, renewed every third of one
            h.clock.advance(lease / 3)
            assert h.deps.leases.renew() == 1
        assert about(claim_until(h, c), h.clock() + dt.timedelta(seconds=lease))
        runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "rival")
    assert h.state(c.id) == "CAPTURING"
    assert [a.task_id for a in h.deps.repo.attempts(c.id, CAPTURE)] == ["first"]


def test_a_claim_nobody_renews_lapses_within_one_lease_and_a_rival_settles_the_step(harness):
    h = harness
    c = capturing(h)
    write_ahead(h, c, "dead")  # its process died here: nothing renews the claim
    h.clock.advance(h.deps.leases.lease_seconds + 1)
    runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "rival")
    assert h.state(c.id) == "COMPLETED"
    assert [k for k, _ in kinds(h, c)].count("CAPTURED") == 1


def test_renewals_stop_at_the_run_lease(harness):
    h = harness
    c = capturing(h)
    lease, cap = h.deps.leases.lease_seconds, h.deps.settings.run_lease_seconds
    began = h.clock()
    claim = Claim(h.deps.repo.get(c.id).version, lease)
    with h.deps.leases.holding(Checkout, c.id, lambda: claim.token):
        h.deps.repo.begin_attempt(c.id, CAPTURE, c.merchant_capture_reference, "stuck", claim=claim)
        while h.clock() < began + dt.timedelta(seconds=cap):
            assert claim_until(h, c) >= h.clock()  # never lapsed while renewed
            h.clock.advance(lease / 3)
            h.deps.leases.renew()
        assert about(claim_until(h, c), began + dt.timedelta(seconds=cap))
        assert h.deps.leases.renew() == 0
        h.clock.advance(1)
        runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "rival")
    assert h.state(c.id) == "COMPLETED"


def test_a_claim_given_back_or_taken_over_is_left_alone(harness):
    h = harness
    c = capturing(h)
    old = write_ahead(h, c, "old")
    with h.deps.leases.holding(Checkout, c.id, lambda: old.token):
        h.clock.advance(h.deps.leases.lease_seconds + 1)
        new = write_ahead(h, c, "new")  # the old run's claim lapsed: another run took it
        taken = claim_until(h, c)
        h.clock.advance(1)
        assert h.deps.leases.renew() == 1  # sent, but the old token no longer holds the row
        assert h.deps.repo.get(c.id).claim_token == new.token and claim_until(h, c) == taken
        h.deps.repo.release(Checkout, c.id, new.token)
        h.deps.leases.renew()
    row = h.deps.repo.get(c.id)
    assert row.claim_token is None and row.claim_until is None


def test_a_step_run_keeps_its_claim_renewed_while_its_call_is_out(harness, monkeypatch):
    h = harness
    c = capturing(h)
    lease = h.deps.leases.lease_seconds
    seen = []
    real = h.deps.plural.capture_order

    def slow_capture(order_id, request):  # the call outlasts three leases
        for _ in range(9):
            h.clock.advance(lease / 3)
            h.deps.leases.renew()
        seen.append(claim_until(h, c) - h.clock())
        return real(order_id, request)

    monkeypatch.setattr(h.deps.plural, "capture_order", slow_capture)
    runner.run(h.deps, Step.CAPTURE_ORDER, c.id, "slow")
    assert len(seen) == 1 and about(seen[0], dt.timedelta(seconds=lease))
    assert h.state(c.id) == "COMPLETED" and h.deps.repo.get(c.id).claim_token is None
    assert h.deps.leases.renew() == 0  # the run ended: nothing of it is held


def test_a_refund_run_keeps_its_claim_renewed_while_its_call_is_out(harness, monkeypatch):
    from orchestrator.store.models import Refund
    from orchestrator.merchant.refunds import refunds_of

    h = harness
    c = authorized(h, pre_auth=False)
    h.service.refund(c.id, None, None)
    refund = refunds_of(h.deps, c.id)[0]
    lease = h.deps.leases.lease_seconds
    seen = []
    real = h.deps.plural.create_refund

    def slow_refund(*args, **kwargs):
        h.clock.advance(2 * lease)
        h.deps.leases.renew()
        with h.deps.repo.session() as s:
            seen.append(aware(s.get(Refund, refund.id).claim_until) - h.clock())
        return real(*args, **kwargs)

    monkeypatch.setattr(h.deps.plural, "create_refund", slow_refund)
    h.drain()
    assert len(seen) == 1 and about(seen[0], dt.timedelta(seconds=lease))


def test_the_renewing_thread_moves_a_held_claims_end(harness):
    h = harness
    c = capturing(h)
    token = h.deps.repo.claim(Checkout, c.id, 0.3)
    leases = Leases(h.deps.repo, 0.3, 60, utcnow, renewing=True)
    try:
        with leases.holding(Checkout, c.id, lambda: token):
            first = claim_until(h, c)
            deadline = time.monotonic() + 5
            while claim_until(h, c) == first and time.monotonic() < deadline:
                time.sleep(0.05)
            renewed = claim_until(h, c)
            assert renewed != first and renewed <= utcnow() + dt.timedelta(seconds=0.3)
    finally:
        leases.stop()

"""Model-based test of the saga (Hypothesis stateful testing).

The saga runs in-process against the sandbox (SQLite, the vault, real HTTP), in both sandbox
modes, through random interleavings of: step deliveries in any order, duplicated and concurrent
ones, a crash between write-ahead and call and between call and record, fresh, stale and
duplicated webhooks, a process killed outright around a call (its claim left to lapse), polls, return-URL hints, customer OTPs and bank-page decisions, merchant
cancel, delivery (full and partial) and refunds, sandbox faults (5xx, 429, an answer that comes
too late) and time passing.

After every step: every move in every history is legal and one its fact's source may cause, and
the sandbox's ledger shows no order, payment, capture or refund made twice, captured ≤
authorized, refunded ≤ captured. At the end, with faults off and time run forward, every
checkout is final or legitimately waiting, agrees with Get Order, and every delivered checkout
was captured with the delivered amount.

``PYTEST_SAGA_EXAMPLES=2000 ./run.sh test tests/saga/test_saga_model.py`` runs a longer profile (examples against
the strict sandbox; the lenient one gets half as many).
"""

from __future__ import annotations

import collections
import os
import threading
import uuid
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from orchestrator.saga import answers, runner
from orchestrator.domain import saga
from orchestrator.domain.saga import Source, State
from orchestrator.plural import PluralClient, errors
from orchestrator.plural.signatures import sign_callback
from orchestrator.store.repo import may_have_refunds
from orchestrator.merchant.refunds import RefundRefused, refunds_of
from devkit.audit import agrees_with_plural, ledger_problems
from orchestrator.merchant.schemas import CheckoutIn
from orchestrator.merchant.errors import CheckoutError
from orchestrator.saga.sweeps import sweep_due
from orchestrator.inbound.webhooks import process_pending
from tests.conftest import ledger
from tests.inbound.test_webhooks import approve, signed

CARDS = {"otp": "4012001037141112", "acs": "5555555555554444", "decline": "4000000000000002",
         "otp_refused": "4111111111111111"}
#: EMI checkouts: (method, card, issuer, tenure); Debit EMI goes to the bank page, HDFC CC has native OTP
EMI = {"debit_emi": ("DEBIT_EMI", {"number": "4690478199123123", "registered_mobile_number": "9876543210"}, "7", "2"),
       "credit_emi": ("CREDIT_EMI", {"number": "4690000046910000", "name": "Model", "cvv": "123",
                                     "expiry_month": "12", "expiry_year": "2099"}, "6", "1")}
EXAMPLES = int(os.environ.get("PYTEST_SAGA_EXAMPLES", "120"))
#: states a checkout may legitimately rest in once time has run forward with no faults
RESTING = saga.FINAL | {State.AUTHORIZED, State.NEEDS_ATTENTION}
#: how the examples' checkouts ended, printed after the run (what the model covered)
END_STATES: collections.Counter = collections.Counter()


class Crash(BaseException):
    """The worker process dies here: nothing after this line of the step runs."""


class CrashingPlural:
    """The Plural client, with a crash just before or just after the next gateway write."""

    WRITES = {"create_order", "create_payment", "submit_otp", "capture_order", "cancel_order", "create_refund"}

    def __init__(self, inner: Any, when: str):
        self.inner, self.when, self.fired = inner, when, False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name not in self.WRITES or self.fired:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.fired = True
            if self.when == "before":
                raise Crash()
            target(*args, **kwargs)
            raise Crash()

        return call


def advance_sandbox(h: Any, seconds: float) -> None:
    """Plural's time passes with ours (payment expiry, refund settlement)."""
    requests.post(f"{h.sandbox_url}/sandbox/clock", json={"advance": seconds}, timeout=5).raise_for_status()


class SagaModel(RuleBasedStateMachine):
    h: Any = None  # the harness, set by the test

    @initialize(chain=st.sampled_from([0, 4]))
    def fresh(self, chain: int) -> None:
        """``chain``: steps one delivery may run back to back (0: every step through the queue)."""
        from sqlalchemy import update

        self.h.redeps(settings=self.h.deps.settings.model_copy(update={"step_chain": chain}))
        from orchestrator.store.models import Checkout, Refund

        with self.h.deps.repo.session() as s:  # earlier examples' checkouts rest: this one checks its own
            s.execute(update(Checkout).values(next_due_at=None))
            s.execute(update(Refund).values(next_due_at=None))
            s.commit()
        self.ids: list[str] = []
        self.snapshots: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.deliveries: list[tuple[bytes, dict[str, str]]] = []
        self.h.queue.clear()
        self.patient = self.h.deps.plural

    # --- the merchant and the customer --------------------------------------------------

    @precondition(lambda self: len(self.ids) < 3)
    @rule(kind=st.sampled_from(sorted(CARDS) + sorted(EMI)), pre_auth=st.booleans(), amount=st.integers(100, 10**7))
    def new_checkout(self, kind: str, pre_auth: bool, amount: int) -> None:
        data: dict[str, Any] = {
            "merchant_order_reference": f"m-{uuid.uuid4().hex[:16]}", "amount": {"value": amount, "currency": "INR"},
            "pre_auth": pre_auth}
        if kind in EMI:
            method, card, issuer, tenure = EMI[kind]
            data.update(payment_method=method, card=card, emi={"issuer_id": issuer, "tenure_id": tenure},
                        amount={"value": 1_500_000 + amount, "currency": "INR"})  # within both issuers' limits
        else:
            data["card"] = {"number": CARDS[kind], "name": "Model", "cvv": "123", "expiry_month": "12",
                            "expiry_year": "2099"}
        row, _ = self.h.service.create(CheckoutIn.model_validate(data))
        self.ids.append(row.id)

    def _pick(self, data: st.DataObject) -> Any:
        return self.h.deps.repo.get(data.draw(st.sampled_from(self.ids)))

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), right=st.booleans())
    def customer_otp(self, data: st.DataObject, right: bool) -> None:
        c = self._pick(data)
        try:
            self.h.service.submit_otp(c.id, "123456" if right else "654321")
        except CheckoutError:
            pass

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), yes=st.booleans())
    def bank_page(self, data: st.DataObject, yes: bool) -> None:
        c = self._pick(data)
        if c.challenge_url and c.plural_payment_id:
            approve(self.h, c, yes)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), yes=st.sampled_from([True, True, True, False]))
    def customer_finishes(self, data: st.DataObject, yes: bool) -> None:
        """The customer does what the checkout asks: the right OTP, or the bank page."""
        c = self._pick(data)
        if c.state == "AWAITING_OTP":
            try:
                self.h.service.submit_otp(c.id, "123456" if yes else "654321")
            except CheckoutError:
                pass
        elif c.state == "AWAITING_REDIRECT" and c.challenge_url:
            approve(self.h, c, yes)

    @rule()
    def worker_catches_up(self) -> None:
        self.h.drain(2000)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def everyone_keeps_up(self, data: st.DataObject) -> None:
        """The worker runs what is queued and the customer answers at once: checkouts get far
        (authorized, captured, refunded) between the random interleavings."""
        self.h.drain(2000)
        self.customer_finishes(data, True)
        self.h.drain(2000)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def merchant_cancel(self, data: st.DataObject) -> None:
        try:
            self.h.service.cancel(self._pick(data).id)
        except CheckoutError:
            pass

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), part=st.sampled_from([None, 0.5, 1.0]))
    def merchant_delivery(self, data: st.DataObject, part: float | None) -> None:
        c = self._pick(data)
        amount = None if part is None or not c.authorized_amount else max(1, int(c.authorized_amount * part))
        try:
            self.h.service.deliver(c.id, amount)
        except CheckoutError:
            pass

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), part=st.sampled_from([None, 0.3]))
    def merchant_refund(self, data: st.DataObject, part: float | None) -> None:
        c = self._pick(data)
        amount = None if part is None else max(1, int(c.captured_amount * part))
        try:
            self.h.service.refund(c.id, amount, None)
        except (CheckoutError, RefundRefused):
            pass

    # --- the worker ------------------------------------------------------------------

    def _next(self, data: st.DataObject, pop: bool = True) -> tuple[Any, str] | None:
        # draws never depend on the live system (its timing is not Hypothesis's to replay)
        i = data.draw(st.integers(0, 63))
        if not self.h.queue:
            return None
        i %= len(self.h.queue)
        return self.h.queue.pop(i) if pop else self.h.queue[i]

    @rule(data=st.data())
    def deliver_step(self, data: st.DataObject) -> None:
        if (nxt := self._next(data)) is not None:
            runner.run(self.h.deps, nxt[0], nxt[1], "model")

    @rule(data=st.data())
    def duplicate_step(self, data: st.DataObject) -> None:
        if (nxt := self._next(data, pop=False)) is not None:
            runner.run(self.h.deps, nxt[0], nxt[1], "model-duplicate")

    @rule(data=st.data())
    def concurrent_step(self, data: st.DataObject) -> None:
        if (nxt := self._next(data)) is None:
            return
        step, row_id = nxt
        threads = [threading.Thread(target=runner.run, args=(self.h.deps, step, row_id, f"model-{i}")) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @rule(data=st.data(), when=st.sampled_from(["before", "after"]))
    def crash_around_a_call(self, data: st.DataObject, when: str) -> None:
        if (nxt := self._next(data)) is None:
            return
        step, row_id = nxt
        self.h.deps.plural = CrashingPlural(self.patient, when)
        try:
            runner.run(self.h.deps, step, row_id, "model-crash")
        except Crash:
            pass
        finally:
            self.h.deps.plural = self.patient

    @rule(data=st.data(), when=st.sampled_from(["before", "after"]))
    def killed_around_a_call(self, data: st.DataObject, when: str) -> None:
        """The process is killed outright: not even its ``finally`` blocks run, so the run's claim
        stays until its lease lapses (nothing renews it) and a rival takes the row over."""
        if (nxt := self._next(data)) is None:
            return
        step, row_id = nxt
        self.h.deps.plural = CrashingPlural(self.patient, when)
        self.h.deps.repo.release = lambda *_args, **_kwargs: None  # never reached by a killed process
        try:
            runner.run(self.h.deps, step, row_id, "model-killed")
        except Crash:
            pass
        finally:
            del self.h.deps.repo.release
            self.h.deps.plural = self.patient

    @rule(data=st.data(), fault=st.sampled_from(["503", "429", "late"]))
    def step_under_fault(self, data: st.DataObject, fault: str) -> None:
        if (nxt := self._next(data)) is None:
            return
        step, row_id = nxt
        rule_ = ({"kind": "hang_after", "seconds": 0.25} if fault == "late"
                 else {"kind": "error", "statuses": [int(fault)]})
        requests.put(f"{self.h.sandbox_url}/sandbox/faults", json={"rules": [{**rule_, "path": "^/api/pay", "count": 1}]},
                     timeout=5)
        self.h.deps.plural = PluralClient.from_settings(self.h.deps.settings, read_timeout=0.1, max_attempts=1)
        try:
            runner.run(self.h.deps, step, row_id, "model-fault")
        finally:
            self.h.deps.plural = self.patient
            requests.delete(f"{self.h.sandbox_url}/sandbox/faults", timeout=5)

    @rule(seconds=st.sampled_from([1, 1, 30, 30, 300, 1000]))
    def time_passes(self, seconds: int) -> None:
        self.h.clock.advance(seconds)
        advance_sandbox(self.h, seconds)
        sweep_due(self.h.deps)

    # --- Plural's messages ---------------------------------------------------------------

    def _snapshot(self, c: Any) -> dict[str, Any] | None:
        if not c.plural_order_id:
            return None
        data = self.patient.get_order(c.plural_order_id).model_dump(mode="json", exclude_none=True)
        self.snapshots[c.id].append(data)
        return data

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), stale=st.booleans(), twice=st.booleans())
    def webhook(self, data: st.DataObject, stale: bool, twice: bool) -> None:
        c = self._pick(data)
        fresh = self._snapshot(c)
        history = self.snapshots.get(c.id) or []
        pick = data.draw(st.integers(0, 63))
        snapshot = history[pick % len(history)] if stale and history else fresh
        if snapshot is None:
            return
        event = {"PROCESSED": "ORDER_PROCESSED", "AUTHORIZED": "ORDER_AUTHORIZED", "CANCELLED": "ORDER_CANCELLED",
                 "FAILED": "ORDER_FAILED", "ATTEMPTED": "PAYMENT_FAILED"}.get(snapshot["status"], "ORDER_PROCESSED")
        delivery = signed(self.h, event, snapshot)
        for _ in range(2 if twice else 1):
            self.h.inbound.webhook(*delivery)
        process_pending(self.h.deps)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def poll(self, data: st.DataObject) -> None:
        c = self._pick(data)
        if c.plural_order_id:
            answers.settle(self.h.deps, c, self.patient.get_order(c.plural_order_id), "model poll", Source.POLL)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def return_url(self, data: st.DataObject) -> None:
        c = self._pick(data)
        if c.plural_order_id:
            fields = {"order_id": c.plural_order_id, "status": "AUTHORIZED"}
            fields["signature"] = sign_callback(fields, self.h.deps.settings.callback_key())
            self.h.inbound.callback(fields)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def every_move_is_legal_and_caused_by_a_source_that_may(self) -> None:
        for checkout_id in getattr(self, "ids", []):
            history = self.h.deps.repo.history(checkout_id)
            for before, after in zip(history, history[1:]):
                assert after.from_state == before.to_state, (checkout_id, before.to_state, after.from_state)
                frm, to = State(after.from_state), State(after.to_state)
                assert saga.can_move(frm, to), (checkout_id, frm, to, after.reason)
                assert saga.may_cause(Source(after.source), frm, to), (checkout_id, after.source, frm, to)

    @invariant()
    def the_ledger_shows_nothing_twice(self) -> None:
        orders = {c.plural_order_id for c in (self.h.deps.repo.get(i) for i in getattr(self, "ids", [])) if c}
        if orders:
            assert ledger_problems(ledger(self.h.sandbox_url, *orders)) == []

    def teardown(self) -> None:
        h = self.h
        h.deps.plural = self.patient
        requests.delete(f"{h.sandbox_url}/sandbox/faults", timeout=5)
        try:
            process_pending(h.deps)
            h.drain(2000)
            for seconds in (5, 60, 600, 1000, 3600, 86400, 7 * 86400, 86400):
                h.clock.advance(seconds)
                advance_sandbox(h, seconds)
                for _ in range(3):
                    due = sweep_due(h.deps)
                    h.drain(2000)
                    applied = process_pending(h.deps)
                    h.drain(2000)
                    if not due and not applied:
                        break  # at rest: another round at this time would find nothing either
            self.check_the_end()
        finally:
            h.queue.clear()

    def check_the_end(self) -> None:
        h = self.h
        for checkout_id in self.ids:
            c = h.deps.repo.get(checkout_id)
            END_STATES[(c.state, c.late_undo or "", (c.attention_reason or "")[:60], c.error_code or "")] += 1
            assert State(c.state) in RESTING, (checkout_id, c.state, [t.reason for t in h.deps.repo.history(c.id)])
            # the views read refunds only where Repo.may_have_refunds says there can be some
            assert may_have_refunds(c) or not refunds_of(h.deps, c.id), (c.state, c.late_undo)
            if not c.plural_order_id:
                assert State(c.state) in saga.FINAL
                continue
            try:
                order = self.patient.get_order(c.plural_order_id)
            except errors.NotFound:
                continue
            refunded = sum(r.amount_value for r in refunds_of(h.deps, c.id) if r.state == "PROCESSED")
            seen = h.service.view(c)
            assert agrees_with_plural(seen, order.model_dump(mode="json", exclude_none=True)), (
                c.state, order.status, c.late_undo)
            if c.delivered_at is not None and c.state == "COMPLETED":
                assert c.captured_amount == c.capture_amount, (c.captured_amount, c.capture_amount)
            assert refunded <= c.captured_amount or c.late_undo == "REFUNDED"


def run_model(h: Any, examples: int, label: str) -> None:
    requests.put(f"{h.sandbox_url}/sandbox/config",
                 json={"payment_expiry_seconds": 900.0 if h.mode == "strict" else 0.0}, timeout=5)
    SagaModel.h = h
    try:
        run_state_machine_as_test(SagaModel, settings=settings(
            max_examples=examples, stateful_step_count=30, deadline=None,
            derandomize=not os.environ.get("PYTEST_SAGA_RANDOM"), suppress_health_check=list(HealthCheck),
            database=None))
    finally:
        requests.delete(f"{h.sandbox_url}/sandbox/clock", timeout=5)
    print(f"\n{label}: checkouts ended as {dict(END_STATES.most_common())}")
    END_STATES.clear()


@pytest.mark.timeout(1800)
def test_the_saga_under_random_interleavings(harness):
    # the strict sandbox is Plural as documented: it gets the full budget, the lenient half
    run_model(harness, EXAMPLES if harness.mode == "strict" else EXAMPLES // 2, harness.mode)


@pytest.mark.timeout(1800)
def test_the_saga_under_random_interleavings_on_postgres(pg):
    """PostgreSQL has statements of its own (a run's first write-ahead, a create, and a move with
    its history row, event and call outcomes are each one statement there): the model runs over
    it too, with a quarter of the budget."""
    run_model(pg, EXAMPLES // 4, "postgres")

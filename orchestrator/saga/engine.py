"""The saga engine: the one writer of a checkout's state.

Steps, webhooks, polls, merchant actions, timers and operators never change a checkout's state
themselves: they hand the engine a ``Fact`` from a ``Source``. The engine reads the row, asks the
pure rule (``saga.decide``) where that fact moves the checkout from where it is *now*, and writes
the move, its fields, its next due time, a history row (with the fact and its source) and the
merchant's event atomically, compare-and-set on the row it decided from (``Repo.move``: decided
again if the row changed meanwhile). Effects follow the commit: the next step is enqueued, card
data is dropped from the vault once the checkout is final.

A run of a step owns its checkout through a claim (``Run``): its writes are fenced by the claim's
token, and its own move ends the claim, so the next step claims afresh.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.engine import Connection

from orchestrator.domain import saga
from orchestrator.outbound import outbox
from orchestrator.outbound.changes import Announce, silent
from orchestrator.domain.saga import Fact, Source, State, Step, automatic_refund_reference
from orchestrator.store.models import Checkout, Refund, StepAttempt, utcnow
from orchestrator.store import refunds as refunds_store
from orchestrator.store.claims import Claim
from orchestrator.store.repo import Effect, Repo, Trail
from orchestrator.telemetry.logs import get_logger
from orchestrator.store.vault import Vault

log = get_logger("orchestrator.saga.engine")

#: states whose next step the engine enqueues at once; the others wait for their due time
#: (a poll, a capture deadline, a watch, an operator)
_WAITING = saga.POLLING | {State.AUTHORIZED, State.WATCHING, State.NEEDS_ATTENTION}


def _watched(row: Checkout) -> bool:
    """Was the checkout being watched (a cancel Plural refused), itself or before it got stuck?"""
    state = State(row.state)
    return state is State.WATCHING or (state is State.NEEDS_ATTENTION and row.attention_from == State.WATCHING.value)


@dataclass
class Run:
    """One run of one step for one checkout.

    ``claim``: the run's hold on the checkout, taken by its first write (``Claim``); None for a
    run fenced by another row's claim (a refund's). ``attempts`` and ``entered_at``: the
    checkout's step attempts and when it entered its state, read with the row the run decided
    from (the claim's compare-and-set makes them current at the run's first write).
    ``finished``: outcomes of this run's gateway calls not yet written; they are written in the
    run's next transaction (its move, a note, the next write-ahead or the release), so recording a
    call's outcome costs no transaction of its own. ``ended``: the run's own move gave the claim
    back, so no release is needed.
    """

    checkout_id: str
    claim: Claim | None
    task_id: str | None
    started_in: State
    attempts: list[StepAttempt] = field(default_factory=list)
    entered_at: dt.datetime | None = None
    finished: list[tuple[int, str, str | None]] = field(default_factory=list)
    ended: bool = False
    #: the run may go on with the next step itself instead of sending it (``then``, from ``after``)
    chained: bool = False
    then: Step | None = None
    after: Checkout | None = None

    def unresolved(self, step: Step) -> list[StepAttempt]:
        """Earlier attempts of ``step`` whose outcome nobody knows (``in_flight`` after a crash,
        ``unknown`` after a timeout)."""
        return [a for a in self.attempts if a.step == step.value and a.outcome in ("in_flight", "unknown")]

    def tried(self, step: Step, reference: str | None) -> bool:
        """Was ``step`` called with ``reference`` before (a repeat of an idempotent call)?"""
        return reference is not None and any(a.step == step.value and a.reference == reference
                                              and a.outcome != NOT_SENT for a in self.attempts)


#: a step attempt whose call never left (no access token: the credentials were refused)
NOT_SENT = "not_sent"


@dataclass
class Engine:
    settings: Any
    repo: Repo
    vault: Vault
    enqueue: Callable[[Step, str], None]
    clock: Callable[[], dt.datetime] = utcnow
    announce: Announce = silent
    #: asks for the outbox to be delivered soon (the sweep does it anyway)
    kick_events: Callable[[], None] = lambda: None

    def _at(self, seconds: float) -> dt.datetime:
        return self.clock() + dt.timedelta(seconds=seconds)

    def due_for(self, row: Checkout, target: State, fields: dict[str, Any]) -> dt.datetime | None:
        """When a checkout in ``target`` next needs attention (a re-drive safety net included)."""
        if target in saga.FINAL:
            return None
        if target is State.AUTHORIZED:
            return fields.get("capture_deadline_at") or row.capture_deadline_at
        if target is State.NEEDS_ATTENTION:
            return self._at(self.settings.attention_poll_seconds)
        if target in saga.POLLING or target is State.WATCHING:
            nxt = self._at(saga.poll_delay(self.settings.poll_delays, fields.get("polls", 0)))
            # a wait for the customer ends at their deadline; a watch at its end
            limit = row.deadline_at if target in saga.POLLING else fields.get("watch_until") or row.watch_until
            return min(nxt, limit) if limit else nxt
        return self._at(self.settings.step_lease_seconds)

    def _values(self, row: Checkout, state: State, target: State, fact: Fact, reason: str,
                fields: dict[str, Any]) -> dict[str, Any]:
        values = dict(fields)
        values.setdefault("polls", 0)
        values.setdefault("step_failures", 0)
        if target is State.WATCHING:
            values["watch_until"] = self._at(self.settings.watch_seconds)
        values["next_due_at"] = self.due_for(row, target, values)
        if target in (State.AUTHORIZED, State.COMPLETED):
            # a paid checkout shows no error a retried step once met (a 5xx, refused credentials)
            values.setdefault("error_code", None)
            values.setdefault("error_message", None)
        now = self.clock()
        if target is State.NEEDS_ATTENTION:
            values["attention_from"] = state.value
            values["attention_reason"] = reason[:500]
        elif state is State.NEEDS_ATTENTION:
            values["attention_from"] = None
        if _watched(row) and target is State.CANCELLING:
            values.update(finished_late=True, late_undo="RELEASED")
        if _watched(row) and fact is Fact.PLURAL_PROCESSED:
            values.update(finished_late=True, late_undo="REFUNDED")
        # the customer finished after their deadline (a delivery days later is not late)
        late_from = state in saga.BEFORE_AUTHORIZATION or (state is State.CANCELLING
                                                           and row.cancel_reason != "HOLD_EXPIRED")
        if (target in (State.AUTHORIZED, State.COMPLETED) and late_from and row.deadline_at
                and now > row.deadline_at):
            values["finished_late"] = True
        return values

    def _late_refund(self, refunds: list[Refund], fields: dict[str, Any]) -> Effect:
        """A payment that completed after the checkout was cancelled for the merchant is refunded."""

        def write(conn: Connection, row: Checkout, target: State) -> None:
            amount = int(fields.get("captured_amount") or row.payment_amount or row.amount_value)
            count = refunds_store.count(conn, row.id)
            now = self.clock()
            refund = Refund(checkout_id=row.id, merchant_refund_reference=automatic_refund_reference(row.id, int(count) + 1),
                            amount_value=amount, currency=row.currency, origin="LATE_PAYMENT",
                            next_due_at=self._at(self.settings.step_lease_seconds), created_at=now, updated_at=now)
            refunds_store.add_in(conn, refund)
            refunds.append(refund)

        return Effect(applies=_watched, write=write)

    def apply(self, checkout_id: str, fact: Fact, source: Source, reason: str, *, run: Run | None = None,
              fields: dict[str, Any] | None = None, wanted: State | None = None,
              seen: Checkout | None = None) -> Checkout | None:
        """Hand the engine one fact. Returns the checkout after the move, or None if it did not move.

        ``seen``: the row as the caller read it. A final checkout never moves again, so a fact
        about one seen final is ignored without a write transaction (a late webhook, say)."""
        return self.apply_shown(checkout_id, fact, source, reason, run=run, fields=fields, wanted=wanted,
                                seen=seen)[0]

    def apply_shown(self, checkout_id: str, fact: Fact, source: Source, reason: str, *, run: Run | None = None,
                    fields: dict[str, Any] | None = None, wanted: State | None = None,
                    seen: Checkout | None = None) -> tuple[Checkout | None, str | None]:
        """``apply``, and the merchant's view of the checkout as the move wrote it (JSON, the event's
        payload) when its public status changed, else None."""
        if seen is not None and State(seen.state) in saga.FINAL:
            log.info("saga.fact.ignored", fact=fact.value, source=source.value, state=seen.state)
            return None, None
        given = dict(fields or {})
        late_refunds: list[Refund] = []

        def plan(row: Checkout) -> tuple[State, dict[str, Any]] | None:
            state = State(row.state)
            attention_from = State(row.attention_from) if row.attention_from else None
            target = saga.decide(state, fact, source, pre_auth=row.pre_auth, cancel_reason=row.cancel_reason,
                                 attention_from=attention_from, wanted=wanted)
            if target is None:
                return None
            return target, self._values(row, state, target, fact, reason, given)

        effect = self._late_refund(late_refunds, given) if fact is Fact.PLURAL_PROCESSED else None
        shown: list[str] = []

        def record(before: Checkout, after: Checkout, trail: Callable[[], Trail],
                   now: dt.datetime) -> dict[str, Any] | None:
            event = outbox.checkout_change(before, after, trail, now)
            shown.clear()  # a move decided again (the row changed) shows only its last decision
            if event is not None:
                shown.append(event["payload"])
            return event

        moved = self.repo.move(checkout_id, plan, reason=reason, fact=fact.value, source=source.value,
                               claim=run.claim if run else None, effect=effect,
                               finish=run.finished if run else None, record=record)
        if moved is None:
            log.info("saga.fact.ignored", fact=fact.value, source=source.value)
            return None, None
        before, after = moved
        if run is not None and run.claim is not None:
            run.ended = True
        log.info("saga.transition", from_state=before.state, to_state=after.state, fact=fact.value,
                 source=source.value, reason=reason)
        self._announce(before, after, shown[-1] if shown else None)
        self._after(after, run)
        for refund in late_refunds:
            log.warning("saga.late_payment.refunding", refund_id=refund.id, amount=refund.amount_value)
            self.send(Step.REFUND, refund.id)
        return after, shown[-1] if shown else None

    def _announce(self, before: Checkout, after: Checkout, shown: str | None) -> None:
        """Tell whoever waits on the checkout that its public status changed (with ``shown``, the
        merchant's view of it as committed), and have its event (in the outbox since the move's
        commit) delivered soon: hints, that never fail."""
        status = saga.public_change(State(before.state), State(after.state))
        if status is None:
            return
        try:
            self.announce(after.id, status, after.version, shown)
            self.kick_events()
        except Exception as exc:  # waiters recheck the database, the sweep delivers, on their own
            log.warning("saga.announce_failed", error=type(exc).__name__)

    def _after(self, after: Checkout, run: Run | None = None) -> None:
        target = State(after.state)
        if target in saga.FINAL or target in (State.WATCHING, State.NEEDS_ATTENTION):
            self.vault.drop(after.id)
        step = saga.next_step(target)
        if step is not None and target not in _WAITING:
            if run is not None and run.chained:  # the run goes on with it (its due time covers a crash)
                run.then, run.after = step, after
            else:
                self.send(step, after.id)

    def send(self, step: Step, row_id: str) -> None:
        """Enqueue a step after its commit; if the broker is down, the row's due time makes the sweep
        re-drive it, so this never fails the caller."""
        try:
            self.enqueue(step, row_id)
        except Exception as exc:  # the row's due time makes the sweep re-drive it
            log.warning("saga.enqueue_deferred", step=step.value, error=type(exc).__name__)

    def wake(self, row: Checkout, run: Run) -> None:
        """At the end of a run: if something else moved the checkout meanwhile, its step was refused
        the claim this run held; send it again now."""
        state = State(row.state)
        if state is not run.started_in:
            step = saga.next_step(state)
            if step is not None and state not in _WAITING:
                self.send(step, row.id)

"""Runs one step message: a checkout's step (claim it, check its state, run the step, go on with the
next one while it is ready at once), or a refund (whose message carries a refund id). Celery's
tasks and the test harness both enter here (``run``)."""

from __future__ import annotations

import datetime as dt
import time

import redis
import sqlalchemy.exc
import structlog

from orchestrator.domain import saga
from orchestrator.domain.saga import Fact, Source, State, Step
from orchestrator.plural import errors
from orchestrator.saga.answers import Mismatch, flag
from orchestrator.saga.deps import Deps, log, past_deadline, retry_later, text
from orchestrator.saga.engine import Run
from orchestrator.saga.steps import STEPS
from orchestrator.saga.steps.refund import run_refund
from orchestrator.store.models import Checkout, StepAttempt, aware
from orchestrator.store.claims import Claim, LostClaim, claim_free
from orchestrator.store.vault import VaultError
from orchestrator.telemetry import metrics


#: states in which a step of ours must make progress (the others wait for the customer, a
#: delivery, Plural's final word or an operator, each with its own bound)
_ACTIVE = frozenset({State.QUOTING, State.NEW, State.ORDER_CREATED, State.CARD_CHECKED,
                                                     State.PAYMENT_CREATED, State.VERIFYING_OTP, State.CAPTURING,
                                                     State.CANCELLING})


def _stalled(d: Deps, run: Run, c: Checkout) -> bool:
    if State(c.state) not in _ACTIVE:
        return False
    entered = aware(run.entered_at)
    return entered is not None and d.clock() - entered > dt.timedelta(seconds=d.settings.step_max_age_seconds)


def run(d: Deps, step: Step, row_id: str, task_id: str | None = None) -> None:
    """Run one step message: the refund step for the refund ``row_id``; any other step for the
    checkout ``row_id``: claim it, and act only if it is (still) in a state the step belongs to. A
    second delivery while a run holds the checkout does nothing."""
    if step is Step.REFUND:
        return run_refund(d, row_id, task_id)
    checkout_id = row_id
    c, entered_at, attempts = d.repo.load(checkout_id)
    if c is None:
        return
    if c.sealed_card is not None:
        unseal_card(d, c)
    chain = d.settings.step_chain
    while True:
        owned = _run_once(d, step, c, entered_at, attempts, task_id, chained=chain > 0)
        if owned is None or owned.then is None or owned.after is None:
            return
        # the run's move made the next step ready at once: go on with it here, from the row the
        # move wrote (its due time re-drives it if this process dies before)
        step, c, entered_at, attempts, chain = owned.then, owned.after, d.clock(), owned.attempts, chain - 1
        log.info("saga.step.chained", step=step.value)


def unseal_card(d: Deps, c: Checkout) -> None:
    """A checkout accepted while Redis was away holds its card sealed in its row: move it into the
    vault for what is left of its time (none left, or a key that no longer opens it: the card is
    gone, as an expired one), then clear the row."""
    created = c.created_at if c.created_at.tzinfo else c.created_at.replace(tzinfo=dt.timezone.utc)
    left = int(d.settings.card_ttl_seconds - (d.clock() - created).total_seconds())
    if left >= 1:
        try:
            d.vault.put_card(c.id, d.vault.unseal_card(c.sealed_card or ""), left)
        except VaultError:
            log.error("saga.sealed_card_unreadable")
    d.repo.clear_sealed_card(c.id)
    c.sealed_card = None
    log.info("saga.card_unsealed", into_vault=left >= 1)


def _run_once(d: Deps, step: Step, c: Checkout, entered_at: dt.datetime | None, attempts: list[StepAttempt],
              task_id: str | None, chained: bool) -> Run | None:
    if not claim_free(c, d.clock()):
        log.info("saga.step.busy", step=step.value, saga_id=c.id)
        return None
    owned = Run(c.id, Claim(c.version, d.leases.lease_seconds), task_id, State(c.state), attempts,
                entered_at, chained=chained)
    structlog.contextvars.bind_contextvars(saga_id=c.id, order_id=c.plural_order_id)
    started = time.perf_counter()
    try:
        with d.leases.holding(Checkout, c.id, lambda: owned.claim.token if owned.claim else None):
            _run_claimed(d, step, owned, c)
    except LostClaim:
        log.warning("saga.claim.lost", step=step.value)
        metrics.CLAIMS_LOST.labels(step.value).inc()
        owned.then = None
    except BaseException:
        if owned.then is not None:  # the next step was not sent: send it now
            d.engine.send(owned.then, c.id)
        raise
    finally:
        # a run that never wrote holds nothing; one whose own move gave the claim back (and sent
        # the next step) has nothing to release
        token = owned.claim.token if owned.claim else None
        if token is not None and (not owned.ended or owned.finished):
            row = d.repo.release(Checkout, c.id, token, finish=owned.finished)
            if row is not None:
                d.engine.wake(row, owned)
        metrics.STEP_SECONDS.labels(step.value).observe(time.perf_counter() - started)
    return owned


#: failures of our own infrastructure, not of a step: they end the run uncounted
_OUTAGES = (LostClaim, redis.RedisError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
            sqlalchemy.exc.TimeoutError)


def _run_claimed(d: Deps, step: Step, owned: Run, c: Checkout) -> None:
    state = State(c.state)
    if state not in saga.STEP_STATES[step]:
        log.info("saga.step.skipped", step=step.value, state=state.value)
        return
    if step is not Step.CANCEL_ORDER and step is not Step.POLL_ORDER and past_deadline(d, c):
        d.engine.apply(c.id, Fact.DEADLINE_PASSED, Source.TIMER, "customer action deadline passed", run=owned,
                       fields={"cancel_reason": "CUSTOMER_TIMEOUT"})
        return
    if _stalled(d, owned, c):
        # runs that die before they can count a failure (a poison message, a crash loop) are
        # bounded too: no progress in an active state for STEP_MAX_AGE_SECONDS is visible
        d.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER,
                       f"no progress in {c.state} for {d.settings.step_max_age_seconds:g} s", run=owned)
        return
    log.info("saga.step.start", step=step.value, state=state.value)
    try:
        STEPS[step](d, owned, c)
    except errors.NotFound as exc:
        _order_unknown(d, owned, c, step, exc)
    except Mismatch as exc:
        _mismatched(d, owned, c, step, str(exc))
    except _OUTAGES:
        raise  # the store or Redis is away: nothing to count, the run is tried again when it is back
    except Exception as exc:  # noqa: BLE001 - a defect or a poison answer: counted, so it ends visible
        log.exception("saga.step.crashed", step=step.value, error=type(exc).__name__)
        retry_later(d, owned, c, step, exc)


def _mismatched(d: Deps, run: Run, c: Checkout, step: Step, problem: str) -> None:
    """The order a step looked up is not this checkout's: a person looks; nothing is adopted."""
    if flag(d, c, problem, f"{step.value}: order looked up", Source.POLL, run):
        return
    d.repo.note(c.id, states={State(c.state)}, claim=run.claim, finish=run.finished,
                next_due_at=d.engine.due_for(c, State(c.state), {}))


def _order_unknown(d: Deps, run: Run, c: Checkout, step: Step, exc: errors.NotFound) -> None:
    """Plural answers that it does not know the checkout's order: nothing a retry can change, so
    the checkout is resolved (a person looks; it is still reconciled now and then), not looped."""
    reason = f"Plural does not know order {c.plural_order_id} ({step.value}: {exc.code})"
    log.error("saga.order_unknown", step=step.value, error=text(exc))
    if State(c.state) is State.NEEDS_ATTENTION:
        d.repo.note(c.id, states={State.NEEDS_ATTENTION}, claim=run.claim, finish=run.finished,
                    next_due_at=d.engine.due_for(c, State.NEEDS_ATTENTION, {}), attention_reason=reason[:500])
        return
    if d.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER, reason, run=run,
                      fields={"error_code": "ORDER_NOT_FOUND", "error_message": text(reason)}) is None:
        retry_later(d, run, c, step, exc)

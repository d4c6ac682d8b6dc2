"""The refund step: a refund of a completed checkout, written ahead with a deterministic reference,
submitted to Plural, tracked to PROCESSED or FAILED by webhook or by polling.

Plural knows a refund by a reference of ours derived from its id (``saga.plural_refund_reference``),
never by the merchant's ``merchant_refund_reference``: Plural finds any order by its reference, a
checkout's order too. Whatever Plural answers about a refund (the submit, a look-up by reference, a
poll, a webhook) is adopted only if it is a REFUND order of the checkout's order for the refund's
amount; anything else stops the refund in NEEDS_ATTENTION (REFUND_MISMATCH), naming both sides.
What the merchant and the operator ask of refunds is ``orchestrator.merchant.refunds``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from orchestrator.domain.saga import (LATE_REFUND_FAILED, REFUND_FINAL, REFUND_MISMATCH, REFUND_TRANSITIONS, RefundState,
                                      State, Step, plural_refund_reference, refund_id_of, refund_mismatch,
                                      refund_state_of, retry_delay)
from orchestrator.outbound import outbox
from orchestrator.plural import errors
from orchestrator.plural.models import Amount, Order, RefundRequest
from orchestrator.saga.calls import call_ahead
from orchestrator.saga.deps import CREDENTIALS_REJECTED, TRANSIENT, Deps, text
from orchestrator.saga.engine import Run
from orchestrator.store import refunds
from orchestrator.store.models import Refund
from orchestrator.telemetry.logs import get_logger

log = get_logger("orchestrator.saga.refunds")


def get_refund(d: Deps, refund_id: str) -> Refund | None:
    return refunds.get(d.repo, refund_id)


def move(d: Deps, r: Refund, target: RefundState, claim: str | None = None, **fields: Any) -> bool:
    """Compare-and-set a refund's state (fenced by the run's ``claim``); a refund that becomes
    PROCESSED adds its amount to the checkout's refunded amount in the same transaction, as an
    increment, so concurrent refunds of one checkout never lose each other's update."""
    allowed = [s.value for s, targets in REFUND_TRANSITIONS.items() if target in targets]
    if target.value == r.state:
        if target in REFUND_FINAL:
            return False
        allowed.append(r.state)
    now = d.clock()
    with d.repo.session() as s:
        rowcount = refunds.set_state(s, r.id, allowed, claim, now, target.value, **fields)
        if rowcount == 1 and target is RefundState.PROCESSED:
            refunds.add_refunded(s, r.checkout_id, r.amount_value, now)
        if rowcount == 1 and target.value != r.state:  # its event, in the same transaction
            after = Refund.model_construct(**{**r.model_dump(), "state": target.value, "updated_at": now, **fields})
            outbox.record_refund_change(s, after, now)
        s.commit()
        moved = rowcount == 1
    if moved:
        log.info("refund.transition", refund_id=r.id, from_state=r.state, to_state=target.value)
        if target in REFUND_FINAL or target is RefundState.NEEDS_ATTENTION:
            d.kick_events()
    return moved


def sent_as(r: Refund) -> tuple[str, ...]:
    """The references ``r`` may have been sent to Plural with: ours; and the merchant's, for a
    refund written before references were ours (never one that names another refund of ours)."""
    ours = plural_refund_reference(r.id)
    legacy = r.merchant_refund_reference
    return (ours,) if legacy == ours or refund_id_of(legacy) is not None else (ours, legacy)


def disagreement(d: Deps, r: Refund, order: Order) -> str | None:
    """Why ``order`` is not ``r`` at Plural (not a REFUND of the checkout's order, of its amount,
    under a reference it was sent with), or None."""
    c = d.repo.get(r.checkout_id)
    amount = order.order_amount
    why = refund_mismatch(order_type=order.type, parent_order_id=order.parent_order_id,
                          amount=amount.value if amount else None, currency=amount.currency if amount else None,
                          want_parent=c.plural_order_id if c else None, want_amount=r.amount_value,
                          want_currency=r.currency)
    if order.merchant_order_reference is not None and order.merchant_order_reference not in sent_as(r):
        why = "; ".join(filter(None, [why, f"reference {order.merchant_order_reference}, not {sent_as(r)[0]}"]))
    return why


def _stop_mismatched(d: Deps, r: Refund, order: Order, why: str, reason: str, claim: str | None) -> None:
    """Plural's ``order`` is not this refund: never adopted; the refund waits for an operator."""
    message = (f"{reason}: Plural's order {order.order_id} (reference {order.merchant_order_reference or '-'}) "
               f"is not refund {r.id} (reference {plural_refund_reference(r.id)}): {why}")
    log.error("refund.mismatch", refund_id=r.id, plural_order_id=order.order_id, error=text(message))
    move(d, r, RefundState.NEEDS_ATTENTION, claim, error_code=REFUND_MISMATCH, error_message=text(message),
         next_due_at=None)


def failed(d: Deps, r: Refund, claim: str | None, code: str, message: str, **fields: Any) -> None:
    """A refund Plural failed or refused. A late payment's automatic refund that fails leaves the
    customer charged: it NEEDS_ATTENTION (its amount free to be refunded again) instead."""
    fields["next_due_at"] = None
    if r.origin == "LATE_PAYMENT":
        move(d, r, RefundState.NEEDS_ATTENTION, claim, error_code=LATE_REFUND_FAILED,
             error_message=text(f"the automatic refund of a late payment failed ({code}: {message}); "
                                "the customer is still charged: refund the checkout again"), **fields)
        log.error("refund.late_refund_failed", refund_id=r.id, saga_id=r.checkout_id, error=text(message))
        return
    move(d, r, RefundState.FAILED, claim, error_code=code[:64], error_message=text(message), **fields)


def follow(d: Deps, r: Refund, order: Order, reason: str, claim: str | None = None) -> None:
    """Move a refund to what Plural's refund order says, if it is this refund's order."""
    if r.state == RefundState.NEEDS_ATTENTION.value and r.error_code == LATE_REFUND_FAILED:
        return  # Plural failed it for good; its amount is free to be refunded again
    why = disagreement(d, r, order)
    if why is not None:
        return _stop_mismatched(d, r, order, why, reason, claim)
    target = refund_state_of(order.status)
    fields: dict[str, Any] = {"plural_refund_order_id": order.order_id, "plural_status": order.status}
    if target is RefundState.PENDING:
        delay = d.settings.poll_delays[min(r.polls, len(d.settings.poll_delays) - 1)]
        fields.update(polls=r.polls + 1, next_due_at=d.clock() + dt.timedelta(seconds=delay))
    else:
        fields["next_due_at"] = None
    if target is RefundState.FAILED:
        return failed(d, r, claim, "REFUND_FAILED", reason, **fields)
    move(d, r, target, claim, **fields)


def backoff(d: Deps, r: Refund, exc: BaseException, claim: str) -> None:
    """Try again later; after ``STEP_MAX_ATTEMPTS`` failures stop trying and say so (the refund
    keeps its amount reserved: it may still have happened at Plural). Plural refusing our
    client credentials is not counted for ``CREDENTIALS_WAIT_SECONDS`` from the refusals' start:
    the refund is tried again every ``CREDENTIALS_RETRY_SECONDS`` and goes on once they work."""
    if isinstance(exc, errors.CredentialsRejected) and exc.since is not None and \
            d.clock().timestamp() - exc.since < d.settings.credentials_wait_seconds:
        due = d.clock() + dt.timedelta(seconds=d.settings.credentials_retry_seconds)
        refunds.set_held(d.repo, r.id, claim, next_due_at=due, error_code=CREDENTIALS_REJECTED, error_message=text(exc))
        log.warning("refund.credentials_rejected", refund_id=r.id)
        return
    failures = r.failures + 1
    delay = retry_delay(failures, d.settings.retry_backoff_base, d.settings.retry_backoff_cap)
    gave_up = failures >= d.settings.step_max_attempts
    due = d.clock() + dt.timedelta(seconds=d.settings.attention_poll_seconds if gave_up else delay)
    code = "NEEDS_ATTENTION" if gave_up else str(getattr(exc, "code", type(exc).__name__))[:64]
    refunds.set_held(d.repo, r.id, claim, failures=failures, next_due_at=due, error_code=code, error_message=text(exc))
    (log.error if gave_up else log.warning)("refund.retry_later", refund_id=r.id, failures=failures,
                                            error=text(exc))


def run_refund(d: Deps, refund_id: str, task_id: str | None = None) -> None:
    """The refund step: claim the refund, submit it if REQUESTED (resolving an unknown earlier
    submit first), or poll it if PENDING."""
    token = d.repo.claim(Refund, refund_id, d.leases.lease_seconds)
    if token is None:
        log.info("refund.busy", refund_id=refund_id)
        return
    try:
        with d.leases.holding(Refund, refund_id, lambda: token):
            _run_refund(d, refund_id, token, task_id)
    finally:
        d.repo.release(Refund, refund_id, token)


def _run_refund(d: Deps, refund_id: str, token: str, task_id: str | None) -> None:
    r = get_refund(d, refund_id)
    if r is None or RefundState(r.state) in REFUND_FINAL | {RefundState.NEEDS_ATTENTION}:
        return
    c = d.repo.get(r.checkout_id)
    assert c is not None
    if r.plural_refund_order_id:
        try:
            return follow(d, r, d.plural.get_order(r.plural_refund_order_id), "polled", token)
        except TRANSIENT as exc:
            return backoff(d, r, exc, token)
    # the refund's own claim fences its writes; the run carries the checkout's refund attempts
    run = Run(c.id, None, task_id, State(c.state), attempts=d.repo.attempts(c.id, Step.REFUND.value))
    ours = plural_refund_reference(r.id)
    # a submit whose outcome is unknown is resolved by looking its reference up, never by sending
    # it again (Plural answers a repeated refund reference DUPLICATE_REQUEST)
    for reference in sent_as(r):
        mine = [a for a in run.unresolved(Step.REFUND) if a.reference == reference]
        if not mine:
            continue
        try:
            found = d.plural.get_order_by_reference(reference)
        except errors.NotFound:
            d.repo.resolve_attempts([a.id for a in mine if a.id], "failed", "no refund at Plural")
            continue
        except TRANSIENT as exc:
            return backoff(d, r, exc, token)
        if disagreement(d, r, found) is None:  # else left unresolved: the refund stops for an operator
            d.repo.resolve_attempts([a.id for a in mine if a.id], "succeeded", found.order_id)
        return follow(d, r, found, "refund found by reference", token)
    # a refund first sent under the merchant's reference (before references were ours) is sent again
    # only under that one: Plural's duplicate check then still guards it, should Plural be lagging
    legacy = [ref for ref in sent_as(r)[1:] if any(a.reference == ref for a in run.attempts)]
    reference = legacy[0] if legacy else ours
    request = RefundRequest(merchant_order_reference=reference,
                            order_amount=Amount(value=r.amount_value, currency=r.currency))
    got = call_ahead(d, run, Step.REFUND, reference,
                     lambda: d.plural.create_refund(c.plural_order_id, request), lambda o: o.order_id)
    if got.transient:
        return backoff(d, r, got.transient, token)
    if got.refused:
        return failed(d, r, token, got.refused.code, got.refused.message)
    follow(d, r, got.result, "submitted", token)


def apply_refund_event(d: Deps, order: Order) -> str | None:
    """A REFUND_* webhook: move the refund it names. Returns a note, or None if no refund is known."""
    named = refund_id_of(order.merchant_order_reference)
    r = refunds.for_order(d.repo, order.order_id, named)
    if r is None:
        return None
    before = r.state
    follow(d, r, order, "webhook")
    after = get_refund(d, r.id)
    return f"refund {before} → {after.state if after else '?'}"

"""Refunds of completed checkouts: written ahead with a deterministic reference, submitted to
Plural, tracked to PROCESSED or FAILED by webhook or by polling.

Never above what was captured minus what was refunded (failed refunds excepted): the check and
the insert run in one transaction that holds the checkout's row (``BEGIN IMMEDIATE`` on SQLite,
``FOR UPDATE`` on PostgreSQL), so two concurrent requests cannot both spend the same paise.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from orchestrator.core.saga import REFUND_FINAL, REFUND_TRANSITIONS, RefundState, State, Step, refund_state_of, refundable
from orchestrator.db.models import Checkout, Refund
from orchestrator.logs import get_logger
from orchestrator.plural import errors
from orchestrator.plural.models import Amount, Order, RefundRequest
from orchestrator.steps import TRANSIENT, Deps, call_ahead

log = get_logger("orchestrator.refunds")


class RefundRefused(Exception):
    def __init__(self, http_status: int, code: str, message: str, **details: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.details = http_status, code, message, details


def request_refund(d: Deps, checkout_id: str, amount: int | None, reference: str | None) -> tuple[Refund, bool]:
    """Record a refund (or return the one with this reference) and enqueue it after the commit."""
    now = d.clock()
    with d.repo.session() as s:
        c = s.exec(select(Checkout).where(Checkout.id == checkout_id).with_for_update()).first()
        if c is None:
            raise RefundRefused(404, "CHECKOUT_NOT_FOUND", f"no checkout {checkout_id}")
        if reference:
            existing = s.exec(select(Refund).where(Refund.merchant_refund_reference == reference)).first()
            if existing is not None:
                if existing.checkout_id != c.id or (amount is not None and amount != existing.amount_value):
                    raise RefundRefused(409, "REFERENCE_CONFLICT", "merchant_refund_reference names another refund",
                                        refund_id=existing.id)
                return existing, False
        if State(c.state) is not State.COMPLETED:
            raise RefundRefused(409, "INVALID_STATE", "only a COMPLETED checkout can be refunded", status=c.state)
        mine = list(s.exec(select(Refund).where(Refund.checkout_id == c.id)))
        spent = sum(r.amount_value for r in mine if r.state != RefundState.FAILED.value)
        available = refundable(c.captured_amount, spent)
        value = available if amount is None else amount
        if value <= 0 or value > available:
            raise RefundRefused(422, "REFUND_EXCEEDS_CAPTURED",
                                f"at most {available} {c.currency} (minor units) can still be refunded",
                                refundable={"value": available, "currency": c.currency})
        row = Refund(checkout_id=c.id, merchant_refund_reference=reference or f"{c.id}-r{len(mine) + 1}",
                     amount_value=value, currency=c.currency,
                     next_due_at=now + dt.timedelta(seconds=d.settings.step_lease_seconds),
                     created_at=now, updated_at=now)
        s.add(row)
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            raise RefundRefused(409, "REFERENCE_CONFLICT", "merchant_refund_reference is already used") from None
    log.info("refund.requested", saga_id=checkout_id, refund_id=row.id, amount=value)
    try:
        d.enqueue(Step.REFUND, row.id)
    except Exception as exc:  # the due time re-drives it
        log.warning("refund.enqueue_deferred", refund_id=row.id, error=type(exc).__name__)
    return row, True


def refunds_of(d: Deps, checkout_id: str) -> list[Refund]:
    with d.repo.read_session() as s:
        return list(s.exec(select(Refund).where(Refund.checkout_id == checkout_id).order_by(col(Refund.created_at))))


def get_refund(d: Deps, refund_id: str) -> Refund | None:
    with d.repo.read_session() as s:
        return s.get(Refund, refund_id)


def move(d: Deps, r: Refund, target: RefundState, **fields: Any) -> bool:
    """Compare-and-set a refund's state; a PROCESSED refund adds to the checkout's refunded amount."""
    allowed = [s.value for s, targets in REFUND_TRANSITIONS.items() if target in targets]
    if target.value == r.state:
        allowed.append(r.state)
    now = d.clock()
    with d.repo.session() as s:
        result = s.execute(update(Refund).where(col(Refund.id) == r.id, col(Refund.state).in_(allowed))
                           .values(state=target.value, updated_at=now, **fields))
        if result.rowcount == 1 and target is RefundState.PROCESSED:
            total = s.exec(select(func.coalesce(func.sum(Refund.amount_value), 0)).where(
                Refund.checkout_id == r.checkout_id, Refund.state == RefundState.PROCESSED.value)).one()
            s.execute(update(Checkout).where(col(Checkout.id) == r.checkout_id)
                      .values(refunded_amount=int(total), updated_at=now))
        s.commit()
        moved = result.rowcount == 1
    if moved:
        log.info("refund.transition", refund_id=r.id, from_state=r.state, to_state=target.value)
    return moved


def follow(d: Deps, r: Refund, order: Order, reason: str) -> None:
    """Move a refund to what Plural's refund order says."""
    target = refund_state_of(order.status)
    fields: dict[str, Any] = {"plural_refund_order_id": order.order_id, "plural_status": order.status}
    if target is RefundState.PENDING:
        delay = d.settings.poll_delays[min(r.polls, len(d.settings.poll_delays) - 1)]
        fields.update(polls=r.polls + 1, next_due_at=d.clock() + dt.timedelta(seconds=delay))
    else:
        fields["next_due_at"] = None
    if target is RefundState.FAILED:
        fields.update(error_code="REFUND_FAILED", error_message=reason[:500])
    move(d, r, target, **fields)


def _backoff(d: Deps, r: Refund, exc: BaseException) -> None:
    failures = r.failures + 1
    delay = min(d.settings.retry_backoff_cap, d.settings.retry_backoff_base * 2 ** (failures - 1))
    with d.repo.session() as s:
        s.execute(update(Refund).where(col(Refund.id) == r.id).values(
            failures=failures, next_due_at=d.clock() + dt.timedelta(seconds=delay),
            error_code=getattr(exc, "code", type(exc).__name__)[:64], error_message=str(exc)[:500]))
        s.commit()


def run_refund(d: Deps, refund_id: str, task_id: str | None = None) -> None:
    """The refund step: submit a REQUESTED refund (resolving an unknown earlier submit first), or
    poll a PENDING one."""
    r = get_refund(d, refund_id)
    if r is None or RefundState(r.state) in REFUND_FINAL:
        return
    c = d.repo.get(r.checkout_id)
    assert c is not None
    if r.plural_refund_order_id:
        try:
            return follow(d, r, d.plural.get_order(r.plural_refund_order_id), "polled")
        except TRANSIENT as exc:
            return _backoff(d, r, exc)
    unresolved = d.repo.unresolved_attempts(c.id, [Step.REFUND.value])
    mine = [a for a in unresolved if a.reference == r.merchant_refund_reference]
    if mine:
        try:
            found = d.plural.get_order_by_reference(r.merchant_refund_reference)
        except errors.NotFound:
            d.repo.resolve_attempts([a.id for a in mine if a.id], "failed", "no refund at Plural")
        except TRANSIENT as exc:
            return _backoff(d, r, exc)
        else:
            d.repo.resolve_attempts([a.id for a in mine if a.id], "succeeded", found.order_id)
            return follow(d, r, found, "refund found by reference")
    request = RefundRequest(merchant_order_reference=r.merchant_refund_reference,
                            order_amount=Amount(value=r.amount_value, currency=r.currency))
    got = call_ahead(d, c.id, Step.REFUND, r.merchant_refund_reference, task_id,
                     lambda: d.plural.create_refund(c.plural_order_id, request), lambda o: o.order_id)
    if got.transient:
        return _backoff(d, r, got.transient)
    if got.refused:
        move(d, r, RefundState.FAILED, error_code=got.refused.code[:64], error_message=got.refused.message[:500],
             next_due_at=None)
        return
    follow(d, r, got.result, "submitted")


def refund_view(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "checkout_id": r.checkout_id,
        "merchant_refund_reference": r.merchant_refund_reference,
        "amount": {"value": r.amount_value, "currency": r.currency},
        "status": r.state,
        "plural_refund_order_id": r.plural_refund_order_id,
        "error": {"code": r.error_code, "message": r.error_message} if r.state == "FAILED" else None,
        "created_at": r.created_at.isoformat() if r.created_at else None,
    }


def apply_refund_event(d: Deps, order: Order) -> str | None:
    """A REFUND_* webhook: move the refund it names. Returns a note, or None if no refund is known."""
    with d.repo.session() as s:
        q = select(Refund).where((Refund.plural_refund_order_id == order.order_id)
                                 | (Refund.merchant_refund_reference == (order.merchant_order_reference or "")))
        r = s.exec(q).first()
    if r is None:
        return None
    before = r.state
    follow(d, r, order, "webhook")
    after = get_refund(d, r.id)
    return f"refund {before} → {after.state if after else '?'}"

"""What the merchant sees: a checkout and a refund as the API shows them, and as events carry them.

Pure functions of rows (no database, no framework), shared by the API's answers and the outbox,
so an event's payload is the checkout exactly as ``GET`` showed it at that moment.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any, Iterable

from orchestrator.domain import emi, methods, saga
from orchestrator.domain.saga import State
from orchestrator.store.models import Checkout, Refund, Transition


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    utc = value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return utc.isoformat().replace("+00:00", "Z")


def refund_view(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "checkout_id": r.checkout_id,
        "merchant_refund_reference": r.merchant_refund_reference,
        "amount": {"value": r.amount_value, "currency": r.currency},
        "status": r.state,
        "plural_refund_order_id": r.plural_refund_order_id,
        "error": ({"code": r.error_code, "message": r.error_message}
                  if r.state in ("FAILED", "NEEDS_ATTENTION") else None),
        "origin": r.origin,
        "created_at": r.created_at.isoformat() if r.created_at else None,
    }


def emi_view(c: Checkout) -> dict[str, Any] | None:
    if not methods.rule(c.payment_method).emi:
        return None
    choice = copy.deepcopy(c.emi_choice or {})
    if choice.get("expected_monthly_emi") is not None:
        choice["expected_monthly_emi"] = {"value": choice["expected_monthly_emi"], "currency": c.currency}
    for product in choice.get("product_details") or []:
        product["product_amount"] = {"value": product["product_amount"], "currency": c.currency}
    if c.cart_coupon_discount:
        choice["cart_coupon_discount_amount"] = {"value": c.cart_coupon_discount, "currency": c.currency}
    # the offer Plural validated (absent until then, and for a checkout refused before it)
    return {"choice": choice, "offer": emi.summary(c.offer, c.currency) if c.offer else None}


def checkout_view(c: Checkout, history: Iterable[Transition], refunds: Iterable[Refund],
                  now: dt.datetime) -> dict[str, Any]:
    """The merchant's view of ``c`` with its history and refunds, at ``now``."""
    state = State(c.state)
    next_action = None
    if state is State.AWAITING_OTP:
        wait = (c.otp_resend_at - now).total_seconds() if c.otp_resend_at else 0
        next_action = {"type": "SUBMIT_OTP", "resend_after": max(int(wait + 0.999), 0),
                       "attempts_left": c.otp_attempts_left}
    elif state is State.AWAITING_REDIRECT and c.challenge_url:
        next_action = {"type": "REDIRECT", "url": c.challenge_url}
    return {
        "id": c.id,
        "status": saga.public_status(state),
        "state": state.value,
        # grows with every write: of two views (answers or events) the higher version is the later
        "version": c.version,
        "merchant_order_reference": c.merchant_order_reference,
        "plural_order_id": c.plural_order_id,
        "plural_payment_id": c.plural_payment_id,
        "amount": {"value": c.amount_value, "currency": c.currency},
        "pre_auth": c.pre_auth,
        "authorized_amount": {"value": c.authorized_amount, "currency": c.currency},
        "captured_amount": {"value": c.captured_amount, "currency": c.currency},
        "refunded_amount": {"value": c.refunded_amount, "currency": c.currency},
        "capture_amount": ({"value": c.capture_amount, "currency": c.currency}
                           if c.capture_amount is not None else None),
        "delivered_at": iso(c.delivered_at),
        "capture_deadline_at": iso(c.capture_deadline_at),
        "cancel_reason": c.cancel_reason,
        "payment_method": c.payment_method,
        "payment_amount": {"value": c.payment_amount or c.amount_value, "currency": c.currency},
        "emi": emi_view(c),
        "card": {"last4": c.card_last4, "network": c.card_network},
        "next_action": next_action,
        "error": {"code": c.error_code, "message": c.error_message} if c.error_code else None,
        "finished_late": c.finished_late,
        # how a payment that completed after the checkout ended was undone: RELEASED or REFUNDED
        "late_undo": c.late_undo,
        "attention": ({"reason": c.attention_reason, "stuck_in": c.attention_from}
                      if state is State.NEEDS_ATTENTION else None),
        "deadline_at": iso(c.deadline_at),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
        "history": [{"from": t.from_state, "to": t.to_state, "fact": t.fact, "source": t.source,
                     "reason": t.reason, "at": iso(t.at)} for t in history],
        "refunds": ([refund_view(r) for r in refunds]
                    if c.pre_auth or state is State.COMPLETED or c.late_undo == "REFUNDED" else []),
    }


def summary_view(c: Checkout) -> dict[str, Any]:
    """A checkout in a list: what it is and where it stands, without its history."""
    state = State(c.state)
    return {
        "id": c.id,
        "status": saga.public_status(state),
        "state": state.value,
        # grows with every write: of two views (answers or events) the higher version is the later
        "version": c.version,
        "merchant_order_reference": c.merchant_order_reference,
        "amount": {"value": c.amount_value, "currency": c.currency},
        "payment_method": c.payment_method,
        "pre_auth": c.pre_auth,
        "error": {"code": c.error_code, "message": c.error_message} if c.error_code else None,
        "attention": ({"reason": c.attention_reason, "stuck_in": c.attention_from}
                      if state is State.NEEDS_ATTENTION else None),
        "created_at": iso(c.created_at),
        "updated_at": iso(c.updated_at),
    }

"""The saga's steps (the activities): reload, check the state, write ahead, call Plural, record,
schedule the next step. Plain functions over injected collaborators: Celery only wraps them.

Rules every step follows:

- it runs only in the states ``STEP_STATES`` allows; anywhere else it does nothing (a duplicate
  or late delivery is harmless);
- an earlier attempt of the same step whose outcome is unknown (``in_flight`` after a crash,
  ``unknown`` after a timeout) is resolved by asking Plural before anything is sent again;
- a step attempt row is committed, with its deterministic reference, before the call;
- every state change is compare-and-set; the next step is enqueued only after the commit, and a
  due time is always left on the row, so a lost message is re-driven by the sweep;
- transient failures leave the state as it is and set a due time with exponential backoff.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from orchestrator.core import saga
from orchestrator.core.saga import POLLING, State, Step
from orchestrator.db.models import Checkout, utcnow
from orchestrator.db.repo import Repo
from orchestrator.logs import get_logger
from orchestrator.plural import errors
from orchestrator.plural.models import (
    Amount, CaptureRequest, CardDetails, CardDetailsRequest, CardIdentifier, CreateOrderRequest, CreatePaymentRequest, Order,
    PaymentOption, PaymentRequest, PurchaseDetails)
from orchestrator.vault import Vault

log = get_logger("orchestrator.steps")

#: failures worth trying again later; anything else from Plural is a decision
TRANSIENT = (errors.TransportError, errors.ServerError, errors.RateLimited, errors.ResponseFormatError,
             errors.AuthenticationFailed)


@dataclass
class Deps:
    settings: Any
    repo: Repo
    plural: Any
    vault: Vault
    enqueue: Callable[[Step, str], None]
    clock: Callable[[], dt.datetime] = field(default=utcnow)


def _s(d: Deps, seconds: float) -> dt.datetime:
    return d.clock() + dt.timedelta(seconds=seconds)


def due_for(d: Deps, c: Checkout, target: State, polls: int = 0,
            capture_deadline: dt.datetime | None = None) -> dt.datetime | None:
    """When the saga in ``target`` next needs attention (the re-drive safety net included)."""
    if target in saga.FINAL:
        return None
    if target is State.AUTHORIZED:
        return capture_deadline or c.capture_deadline_at
    if target in POLLING:
        nxt = _s(d, saga.poll_delay(d.settings.poll_delays, polls))
        return min(nxt, c.deadline_at) if c.deadline_at else nxt
    return _s(d, d.settings.step_lease_seconds)


def go(d: Deps, c: Checkout, target: State, reason: str, **fields: Any) -> Checkout | None:
    """Compare-and-set to ``target``, then enqueue its next step (after the commit)."""
    fields.setdefault("polls", 0)
    fields.setdefault("step_failures", 0)
    fields["next_due_at"] = due_for(d, c, target, fields["polls"], fields.get("capture_deadline_at"))
    updated = d.repo.transition(c.id, target, reason, **fields)
    if updated is None:
        log.info("saga.transition.skipped", target=target.value, found=(d.repo.get(c.id) or c).state)
        return None
    log.info("saga.transition", from_state=c.state, to_state=target.value, reason=reason)
    if target in saga.FINAL:
        d.vault.drop_card(c.id)
        d.vault.drop_otp(c.id)
    step = saga.next_step(target)
    if step is not None and target not in POLLING and target is not State.AUTHORIZED:
        d.enqueue(step, c.id)
    return updated


def retry_later(d: Deps, c: Checkout, step: Step, error: BaseException) -> None:
    failures = c.step_failures + 1
    delay = min(d.settings.retry_backoff_cap, d.settings.retry_backoff_base * 2 ** (failures - 1))
    due = _s(d, delay)
    if c.deadline_at and c.state in {s.value for s in saga.BEFORE_AUTHORIZATION}:
        due = min(due, max(c.deadline_at, d.clock()))
    d.repo.update_fields(c.id, states={State(c.state)}, step_failures=failures, next_due_at=due,
                         error_code=getattr(error, "code", type(error).__name__)[:64], error_message=str(error)[:500])
    log.warning("saga.step.retry_later", step=step.value, failures=failures, delay=delay, error=str(error))


def fail(d: Deps, c: Checkout, error: errors.APIError | str, message: str | None = None) -> None:
    code = error.code if isinstance(error, errors.APIError) else error
    text = error.message if isinstance(error, errors.APIError) else (message or code)
    go(d, c, State.FAILED, f"failed: {code}", error_code=code[:64], error_message=text[:500])


def settle(d: Deps, c: Checkout, order: Order, reason: str) -> bool:
    """Follow Plural's view of the order; True when the saga moved (or had nothing left to wait for)."""
    payment = _our_payment(c, order)
    view = saga.gateway_view(order.status, payment.status if payment else None)
    target = saga.settle_target(view, c.pre_auth)
    if target is None:
        return False
    if target is State.CANCELLED and c.cancel_reason == "HOLD_EXPIRED":
        target = State.EXPIRED  # our own release of an undelivered hold, reported before the cancel step
    fields: dict[str, Any] = {"plural_status": order.status}
    if target in (State.AUTHORIZED, State.COMPLETED) and payment and payment.payment_amount:
        fields["authorized_amount"] = payment.payment_amount.value
    if target is State.AUTHORIZED:
        now = d.clock()
        hold = dt.timedelta(days=d.settings.hold_days) - dt.timedelta(seconds=d.settings.hold_margin_seconds)
        fields["authorized_at"] = now
        fields["capture_deadline_at"] = now + max(hold, dt.timedelta(0))
    if target is State.COMPLETED:
        fields["captured_amount"] = order.captured_amount() or (payment.payment_amount.value
                                                                if payment and payment.payment_amount else 0)
    if target is State.FAILED:
        detail = payment.error_detail if payment else None
        fields["error_code"] = (detail.code if detail and detail.code else "PAYMENT_FAILED")[:64]
        fields["error_message"] = (detail.message if detail and detail.message else f"order {order.status}")[:500]
    # late: the customer finished after their deadline (a delivery days later is not late)
    if (c.deadline_at and d.clock() > c.deadline_at and target in (State.AUTHORIZED, State.COMPLETED)
            and State(c.state) not in (State.AUTHORIZED, State.CAPTURING)):
        fields["finished_late"] = True
    go(d, c, target, f"{reason}: Plural reports {order.status}", **fields)
    return True


def _our_payment(c: Checkout, order: Order) -> Any:
    for payment in reversed(order.payments):
        if payment.merchant_payment_reference == c.merchant_payment_reference or payment.id == c.plural_payment_id:
            return payment
    return None


def _past_deadline(d: Deps, c: Checkout) -> bool:
    return bool(c.deadline_at and d.clock() >= c.deadline_at and State(c.state) in saga.BEFORE_AUTHORIZATION)


@dataclass
class Called:
    """The outcome of one written-ahead gateway call: a result, a transient failure, or a refusal."""

    result: Any = None
    transient: BaseException | None = None
    refused: errors.APIError | None = None


def call_ahead(d: Deps, checkout_id: str, step: Step, reference: str | None, task_id: str | None,
               call: Callable[[], Any], detail: Callable[[Any], str] = lambda _r: "ok") -> Called:
    """Commit a step attempt (``in_flight``) with its reference, make the call, record the outcome:
    ``unknown`` for a transient failure (Plural may have acted), ``failed`` for a refusal."""
    attempt = d.repo.begin_attempt(checkout_id, step.value, reference, task_id)
    try:
        result = call()
    except TRANSIENT as exc:
        d.repo.finish_attempt(attempt, "unknown", str(exc))
        return Called(transient=exc)
    except errors.APIError as exc:
        d.repo.finish_attempt(attempt, "failed", f"{exc.code}: {exc.message}")
        return Called(refused=exc)
    d.repo.finish_attempt(attempt, "succeeded", detail(result))
    return Called(result=result)


# --- the steps ------------------------------------------------------------------------------


def create_order(d: Deps, c: Checkout, task_id: str | None) -> None:
    unresolved = d.repo.unresolved_attempts(c.id, [Step.CREATE_ORDER.value])
    if unresolved:
        try:
            order = d.plural.get_order_by_reference(c.merchant_order_reference)
        except errors.NotFound:
            d.repo.resolve_attempts([a.id for a in unresolved if a.id], "failed", "no order at Plural")
        except TRANSIENT as exc:
            return retry_later(d, c, Step.CREATE_ORDER, exc)
        else:
            d.repo.resolve_attempts([a.id for a in unresolved if a.id], "succeeded", order.order_id)
            go(d, c, State.ORDER_CREATED, "order found by reference", plural_order_id=order.order_id,
               plural_status=order.status)
            return
    callback = f"{d.settings.public_base_url.rstrip('/')}/callbacks/plural"
    request = CreateOrderRequest(
        merchant_order_reference=c.merchant_order_reference,
        order_amount=Amount(value=c.amount_value, currency=c.currency),
        pre_auth=c.pre_auth,
        # the browser always comes back through us: a hint to poll at once, then the merchant's URL
        callback_url=callback,
        failure_callback_url=callback,
        purchase_details=PurchaseDetails(customer=c.customer) if c.customer else None,
        notes=f"checkout {c.id}",
    )
    got = call_ahead(d, c.id, Step.CREATE_ORDER, c.merchant_order_reference, task_id,
                     lambda: d.plural.create_order(request), lambda o: o.order_id)
    if got.transient:
        return retry_later(d, c, Step.CREATE_ORDER, got.transient)
    if got.refused:
        return fail(d, c, got.refused)
    order = got.result
    go(d, c, State.ORDER_CREATED, "order created", plural_order_id=order.order_id, plural_status=order.status)


def card_details(d: Deps, c: Checkout, task_id: str | None) -> None:
    card = d.vault.card(c.id)
    if card is None:
        return go(d, c, State.CANCELLING, "card data expired before payment", error_code="CARD_DATA_EXPIRED",
                  error_message="the card data was not used in time and has been discarded")
    request = CardDetailsRequest(amount=str(c.amount_value),
                                 card_details=[CardIdentifier(payment_identifier=card.number)])
    got = call_ahead(d, c.id, Step.CARD_DETAILS, None, task_id, lambda: d.plural.get_card_details(request))
    if got.transient:
        return retry_later(d, c, Step.CARD_DETAILS, got.transient)
    if got.refused:
        d.vault.drop_card(c.id)
        return go(d, c, State.CANCELLING, f"card refused: {got.refused.code}", error_code=got.refused.code[:64],
                  error_message=got.refused.message[:500])
    answer = got.result
    info = answer.card_payment_details[0] if answer.card_payment_details else None
    go(d, c, State.CARD_CHECKED, "card details known", native_otp=bool(info and info.is_native_otp_supported),
       card_network=(info.card_network if info else None), card_issuer=(info.card_issuer if info else None))


def create_payment(d: Deps, c: Checkout, task_id: str | None) -> None:
    unresolved = d.repo.unresolved_attempts(c.id, [Step.CREATE_PAYMENT.value])
    if unresolved:
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, c, Step.CREATE_PAYMENT, exc)
        payment = _our_payment(c, order)
        d.repo.resolve_attempts([a.id for a in unresolved if a.id], "succeeded" if payment else "failed",
                                payment.id if payment else "no payment at Plural")
        if payment is not None:
            d.vault.drop_card(c.id)
            return _after_payment(d, c, order, "payment found at Plural")
    card = d.vault.card(c.id)
    if card is None:
        # a concurrent run of this step may have made the payment and dropped the card: ask Plural
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, c, Step.CREATE_PAYMENT, exc)
        if _our_payment(c, order) is not None:
            return _after_payment(d, c, order, "payment found at Plural")
        return go(d, c, State.CANCELLING, "card data expired before payment", error_code="CARD_DATA_EXPIRED",
                  error_message="the card data was not used in time and has been discarded")
    request = CreatePaymentRequest(payments=[PaymentRequest(
        merchant_payment_reference=c.merchant_payment_reference,
        payment_method="CARD",
        payment_amount=Amount(value=c.amount_value, currency=c.currency),
        payment_option=PaymentOption(card_details=CardDetails(
            name=card.name, card_number=card.number, cvv=card.cvv, expiry_month=card.expiry_month,
            expiry_year=card.expiry_year)),
    )])
    got = call_ahead(d, c.id, Step.CREATE_PAYMENT, c.merchant_payment_reference, task_id,
                     lambda: d.plural.create_payment(c.plural_order_id, request), lambda o: o.order_id)
    if got.transient:
        return retry_later(d, c, Step.CREATE_PAYMENT, got.transient)
    d.vault.drop_card(c.id)
    if got.refused:
        return fail(d, c, got.refused)
    _after_payment(d, c, got.result, "payment created")


def _after_payment(d: Deps, c: Checkout, order: Order, reason: str) -> None:
    payment = _our_payment(c, order)
    fields = {"plural_payment_id": payment.id if payment else None, "challenge_url": order.challenge_url,
              "plural_status": order.status}
    if payment is not None and payment.status == "FAILED":
        detail = payment.error_detail
        return go(d, c, State.FAILED, f"{reason}: payment failed", **fields,
                  error_code=(detail.code if detail and detail.code else "PAYMENT_FAILED")[:64],
                  error_message=(detail.message if detail and detail.message else "payment failed")[:500])
    target = State.PAYMENT_CREATED if c.native_otp else State.AWAITING_REDIRECT
    go(d, c, target, reason, **fields)


def generate_otp(d: Deps, c: Checkout, task_id: str | None) -> None:
    got = call_ahead(d, c.id, Step.GENERATE_OTP, c.plural_payment_id, task_id,
                     lambda: d.plural.generate_otp(c.plural_payment_id), lambda a: f"resend_after={a.resend_after_seconds}")
    if got.transient:
        return retry_later(d, c, Step.GENERATE_OTP, got.transient)
    if got.refused:
        go(d, c, State.AWAITING_REDIRECT, f"native OTP refused ({got.refused.code}): bank page instead")
        return
    answer = got.result
    go(d, c, State.AWAITING_OTP, "OTP sent", otp_resend_at=_s(d, answer.resend_after_seconds or 0),
       otp_attempts_left=c.otp_attempts_left or d.settings.otp_max_attempts)


def submit_otp(d: Deps, c: Checkout, task_id: str | None) -> None:
    unresolved = d.repo.unresolved_attempts(c.id, [Step.SUBMIT_OTP.value])
    if unresolved:
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, c, Step.SUBMIT_OTP, exc)
        d.repo.resolve_attempts([a.id for a in unresolved if a.id], "succeeded", f"order {order.status}")
        if settle(d, c, order, "OTP outcome found at Plural"):
            return
    otp = d.vault.otp(c.id)
    if otp is None:
        go(d, c, State.AWAITING_OTP, "OTP expired before it was sent", error_code="OTP_EXPIRED",
           error_message="submit the OTP again")
        return
    got = call_ahead(d, c.id, Step.SUBMIT_OTP, c.plural_payment_id, task_id,
                     lambda: d.plural.submit_otp(c.plural_payment_id, otp))
    if got.transient:
        return retry_later(d, c, Step.SUBMIT_OTP, got.transient)
    d.vault.drop_otp(c.id)
    if got.refused:
        return _otp_refused(d, c, got.refused)
    _confirm(d, c, "OTP accepted")


def _confirm(d: Deps, c: Checkout, reason: str) -> None:
    """After the customer finished: ask Plural for the outcome at once; poll if it is not there yet."""
    try:
        order = d.plural.get_order(c.plural_order_id)
    except TRANSIENT as exc:
        log.warning("saga.confirm.deferred", error=str(exc))
        go(d, c, State.AUTHORIZING, f"{reason}; outcome to be polled")
        return
    if not settle(d, c, order, reason):
        go(d, c, State.AUTHORIZING, f"{reason}; Plural reports {order.status}")


def _otp_refused(d: Deps, c: Checkout, exc: errors.APIError) -> None:
    left = exc.details.get("attempts_remaining") if isinstance(exc.details, dict) else None
    try:
        order = d.plural.get_order(c.plural_order_id)
    except TRANSIENT:
        order = None
    if order is not None and settle(d, c, order, f"OTP refused ({exc.code})"):
        return
    fields: dict[str, Any] = {"error_code": exc.code[:64], "error_message": exc.message[:500]}
    if isinstance(left, int):
        fields["otp_attempts_left"] = left
    go(d, c, State.AWAITING_OTP, f"OTP refused ({exc.code})", **fields)


def resend_otp(d: Deps, c: Checkout, task_id: str | None) -> None:
    got = call_ahead(d, c.id, Step.RESEND_OTP, c.plural_payment_id, task_id,
                     lambda: d.plural.resend_otp(c.plural_payment_id), lambda a: f"resend_after={a.resend_after_seconds}")
    if got.refused:
        exc = got.refused
        fields: dict[str, Any] = {"error_code": exc.code[:64], "error_message": exc.message[:500]}
        wait = exc.details.get("resend_after") if isinstance(exc.details, dict) else None
        if wait is not None and str(wait).isdigit():
            fields["otp_resend_at"] = _s(d, int(wait))
        d.repo.update_fields(c.id, states={State.AWAITING_OTP}, **fields)
        return
    if got.transient:
        d.repo.update_fields(c.id, states={State.AWAITING_OTP}, error_code="RESEND_FAILED",
                             error_message="the OTP could not be resent; try again")
        return
    answer = got.result
    d.repo.update_fields(c.id, states={State.AWAITING_OTP}, otp_resend_at=_s(d, answer.resend_after_seconds or 0),
                         error_code=None, error_message=None)


def poll_order(d: Deps, c: Checkout, task_id: str | None) -> None:
    try:
        order = d.plural.get_order(c.plural_order_id)
    except TRANSIENT as exc:
        if _past_deadline(d, c):
            go(d, c, State.CANCELLING, "customer action deadline passed", cancel_reason="CUSTOMER_TIMEOUT")
            return
        return retry_later(d, c, Step.POLL_ORDER, exc)
    if settle(d, c, order, "polled"):
        return
    if _past_deadline(d, c):
        go(d, c, State.CANCELLING, "customer action deadline passed", plural_status=order.status,
           cancel_reason="CUSTOMER_TIMEOUT")
        return
    polls = c.polls + 1
    due = _s(d, saga.poll_delay(d.settings.poll_delays, polls))
    if c.deadline_at:
        due = min(due, c.deadline_at)
    d.repo.update_fields(c.id, states={State(c.state)}, polls=polls, next_due_at=due, plural_status=order.status)


def cancel_order(d: Deps, c: Checkout, task_id: str | None) -> None:
    order_id = c.plural_order_id
    if order_id is None:
        try:
            order_id = d.plural.get_order_by_reference(c.merchant_order_reference).order_id
        except errors.NotFound:
            go(d, c, State.CANCELLED, "cancelled before any order reached Plural")
            return
        except TRANSIENT as exc:
            return retry_later(d, c, Step.CANCEL_ORDER, exc)
        d.repo.update_fields(c.id, states={State.CANCELLING}, plural_order_id=order_id)
        c.plural_order_id = order_id
    try:
        order = d.plural.get_order(order_id)
    except TRANSIENT as exc:
        return retry_later(d, c, Step.CANCEL_ORDER, exc)
    payment = _our_payment(c, order)
    view = saga.gateway_view(order.status, payment.status if payment else None)
    final = State.EXPIRED if c.cancel_reason == "HOLD_EXPIRED" else State.CANCELLED
    # an earlier cancel whose answer was lost took effect exactly when Plural now says CANCELLED
    earlier = [a.id for a in d.repo.unresolved_attempts(c.id, [Step.CANCEL_ORDER.value]) if a.id]
    d.repo.resolve_attempts(earlier, "succeeded" if view is saga.GatewayView.CANCELLED else "failed",
                            f"order {order.status}")
    if view is saga.GatewayView.CANCELLED:
        go(d, c, final, "Plural reports CANCELLED", plural_status=order.status)
        return
    if view is saga.GatewayView.PROCESSED:
        # the customer paid before the cancel: report it, never hide it
        settle(d, c, order, "payment completed before the cancel")
        return
    if view is saga.GatewayView.FAILED:
        go(d, c, State.CANCELLED, "order had already failed at Plural", plural_status=order.status)
        return
    got = call_ahead(d, c.id, Step.CANCEL_ORDER, order_id, task_id, lambda: d.plural.cancel_order(order_id),
                     lambda o: o.status)
    if got.transient:
        return retry_later(d, c, Step.CANCEL_ORDER, got.transient)
    if got.refused:
        try:
            truth = d.plural.get_order(order_id)
        except TRANSIENT as again:
            return retry_later(d, c, Step.CANCEL_ORDER, again)
        if not settle(d, c, truth, f"cancel refused ({got.refused.code})"):
            return retry_later(d, c, Step.CANCEL_ORDER, got.refused)
        return
    cancelled = got.result
    # an authorization that arrived after the customer's deadline is released, and says so
    late = view is saga.GatewayView.AUTHORIZED and c.cancel_reason == "CUSTOMER_TIMEOUT"
    if final is State.EXPIRED:
        reason = "hold released before it lapsed: no delivery by the capture deadline"
    else:
        reason = "authorized after the deadline: hold released" if late else "cancelled at Plural"
    go(d, c, final, reason, plural_status=cancelled.status, finished_late=late)


def captured_with(order: Order, reference: str) -> int | None:
    """The amount Plural captured under ``reference``, or None when it has no such capture."""
    for payment in order.payments:
        for capture in payment.capture_data or []:
            if capture.merchant_capture_reference == reference and capture.capture_amount:
                return capture.capture_amount.value
    return None


def _follow_capture(d: Deps, c: Checkout, order: Order, reason: str) -> bool:
    """Settle a capturing saga from Plural's order; True when it moved."""
    amount = captured_with(order, c.merchant_capture_reference)
    if amount is not None:
        go(d, c, State.COMPLETED, f"{reason}: captured", captured_amount=amount, plural_status=order.status)
        return True
    view = saga.gateway_view(order.status)
    if view is saga.GatewayView.PROCESSED:
        go(d, c, State.COMPLETED, f"{reason}: Plural reports {order.status}",
           captured_amount=order.captured_amount(), plural_status=order.status)
        return True
    if view is saga.GatewayView.CANCELLED:
        go(d, c, State.CANCELLED, f"{reason}: the hold was cancelled at Plural", plural_status=order.status,
           error_code="HOLD_CANCELLED", error_message="the authorization was cancelled before the capture")
        return True
    return False


def capture_order(d: Deps, c: Checkout, task_id: str | None) -> None:
    unresolved = d.repo.unresolved_attempts(c.id, [Step.CAPTURE_ORDER.value])
    if unresolved:
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, c, Step.CAPTURE_ORDER, exc)
        found = captured_with(order, c.merchant_capture_reference) is not None
        d.repo.resolve_attempts([a.id for a in unresolved if a.id], "succeeded" if found else "failed",
                                f"order {order.status}")
        if _follow_capture(d, c, order, "capture found at Plural"):
            return
    amount = c.capture_amount or c.authorized_amount
    request = CaptureRequest(merchant_capture_reference=c.merchant_capture_reference,
                             capture_amount=Amount(value=amount, currency=c.currency))
    got = call_ahead(d, c.id, Step.CAPTURE_ORDER, c.merchant_capture_reference, task_id,
                     lambda: d.plural.capture_order(c.plural_order_id, request), lambda o: o.status)
    if got.transient:
        return retry_later(d, c, Step.CAPTURE_ORDER, got.transient)
    if got.refused:
        exc = got.refused
        try:
            truth = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as again:
            return retry_later(d, c, Step.CAPTURE_ORDER, again)
        if not _follow_capture(d, c, truth, f"capture refused ({exc.code})"):
            go(d, c, State.AUTHORIZED, f"capture refused ({exc.code}); the hold stands", error_code=exc.code[:64],
               error_message=exc.message[:500])
        return
    if not _follow_capture(d, c, got.result, "captured"):
        retry_later(d, c, Step.CAPTURE_ORDER, errors.ResponseFormatError("capture answer shows no capture"))


def expire_hold(d: Deps, c: Checkout, task_id: str | None) -> None:
    """An authorization with no delivery by its capture deadline is released before it lapses."""
    if c.capture_deadline_at is None or d.clock() < c.capture_deadline_at:
        d.repo.update_fields(c.id, states={State.AUTHORIZED}, next_due_at=c.capture_deadline_at)
        return
    go(d, c, State.CANCELLING, "no delivery by the capture deadline: releasing the hold",
       cancel_reason="HOLD_EXPIRED")


STEPS: dict[Step, Callable[[Deps, Checkout, str | None], None]] = {
    Step.CREATE_ORDER: create_order,
    Step.CARD_DETAILS: card_details,
    Step.CREATE_PAYMENT: create_payment,
    Step.GENERATE_OTP: generate_otp,
    Step.SUBMIT_OTP: submit_otp,
    Step.RESEND_OTP: resend_otp,
    Step.POLL_ORDER: poll_order,
    Step.CANCEL_ORDER: cancel_order,
    Step.CAPTURE_ORDER: capture_order,
    Step.EXPIRE_HOLD: expire_hold,
}


def run(d: Deps, step: Step, checkout_id: str, task_id: str | None = None) -> None:
    """Run one step for one checkout, if the checkout is (still) in a state the step belongs to."""
    if step is Step.REFUND:
        from orchestrator.refunds import run_refund

        return run_refund(d, checkout_id, task_id)
    c = d.repo.get(checkout_id)
    if c is None:
        log.warning("saga.step.unknown_checkout", step=step.value)
        return
    structlog.contextvars.bind_contextvars(saga_id=c.id, order_id=c.plural_order_id)
    state = State(c.state)
    if state not in saga.STEP_STATES[step]:
        log.info("saga.step.skipped", step=step.value, state=state.value)
        return
    if step is not Step.CANCEL_ORDER and step is not Step.POLL_ORDER and _past_deadline(d, c):
        go(d, c, State.CANCELLING, "customer action deadline passed", cancel_reason="CUSTOMER_TIMEOUT")
        return
    log.info("saga.step.start", step=step.value, state=state.value)
    STEPS[step](d, c, task_id)

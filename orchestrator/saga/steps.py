"""The saga's steps (the activities): claim, reload, check the state, write ahead, call Plural,
hand the outcome to the engine. Plain functions over injected collaborators: Celery only wraps them.

Rules every step follows:

- ``run`` claims the checkout first; while another run holds it, a second delivery does nothing.
  Every write of the run is fenced by its claim; a run that lost it stops (``LostClaim``);
- it runs only in the states ``STEP_STATES`` allows; anywhere else it does nothing;
- an earlier attempt of the same step whose outcome is unknown (``in_flight`` after a crash,
  ``unknown`` after a timeout) is resolved by asking Plural before anything is sent again, and
  so is a 4xx answer to a call that repeated an idempotency reference;
- a step attempt row is committed, with its deterministic reference, before the call;
- a step never changes the state itself: it states a fact (``saga.Fact``) and the engine decides;
- transient failures back off through the row's due time, at most ``STEP_MAX_ATTEMPTS`` times;
  then the checkout NEEDS_ATTENTION, visibly;
- Plural refusing our client credentials (``errors.CredentialsRejected``) is a configuration
  fault, never the checkout's failure: the step waits, uncounted, and tries again every
  ``CREDENTIALS_RETRY_SECONDS``; after ``CREDENTIALS_WAIT_SECONDS`` the checkout NEEDS_ATTENTION
  (``credentials_rejected``). Fixed credentials let every waiting step go on by itself, and
  such a checkout's next look at Plural (``ATTENTION_POLL_SECONDS``) sends it back where it waited.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import redis
import sqlalchemy.exc
import structlog

from orchestrator.telemetry import metrics
from orchestrator.outbound.changes import Announce, silent
from orchestrator.domain import emi, saga
from orchestrator.domain.saga import Fact, Source, State, Step
from orchestrator.store.models import Checkout, StepAttempt, aware, utcnow
from orchestrator.store.claims import Claim, LostClaim, claim_free
from orchestrator.store.repo import Repo
from orchestrator.saga.engine import NOT_SENT, Engine, Run
from orchestrator.saga.leases import Leases
from orchestrator.telemetry.logs import get_logger, mask_text
from orchestrator.plural import errors
from orchestrator.plural.models import (
    Amount, CaptureRequest, CardDetails, CardDetailsRequest, CardIdentifier, CreateOrderRequest, CreatePaymentRequest,
    DeviceInfo, OfferDiscoveryRequest, OfferValidationRequest, Order, PaymentOption, PaymentRequest, ProductDetail, PurchaseDetails)
from orchestrator.store.vault import Vault, VaultError

log = get_logger("orchestrator.saga.steps")

#: failures worth trying again later; anything else from Plural is a decision
TRANSIENT = (errors.TransportError, errors.ServerError, errors.RateLimited, errors.ResponseFormatError,
             errors.AuthenticationFailed, errors.CredentialsRejected)

#: the checkout's error code (and the start of its attention reason) while Plural refuses our credentials
CREDENTIALS_REJECTED = "CREDENTIALS_REJECTED"


@dataclass
class Deps:
    settings: Any
    repo: Repo
    plural: Any
    vault: Vault
    enqueue: Callable[[Step, str], None]
    clock: Callable[[], dt.datetime] = field(default=utcnow)
    announce: Announce = field(default=silent)
    #: asks for the outbox to be delivered soon (the sweep does it anyway)
    kick_events: Callable[[], None] = field(default=lambda: None)
    #: this process's live claims, renewed while their runs live (one per process: ``Runtime``)
    leases: Leases = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.leases is None:
            self.leases = Leases.from_settings(self.repo, self.settings, self.clock)

    @property
    def engine(self) -> Engine:
        return Engine(self.settings, self.repo, self.vault, self.enqueue, self.clock, self.announce, self.kick_events)


def _s(d: Deps, seconds: float) -> dt.datetime:
    return d.clock() + dt.timedelta(seconds=seconds)


def text(value: Any, limit: int = 500) -> str:
    """Text from Plural or an exception, masked before it is stored, logged or shown."""
    return mask_text(str(value))[:limit]


def state_fact(d: Deps, run: Run, fact: Fact, reason: str, **fields: Any) -> Checkout | None:
    """A step's own outcome, handed to the engine under the run's claim."""
    return d.engine.apply(run.checkout_id, fact, Source.STEP, reason, run=run, fields=fields)


def retry_later(d: Deps, run: Run, c: Checkout, step: Step, error: BaseException) -> None:
    """Back off through the due time; after ``STEP_MAX_ATTEMPTS`` failures, NEEDS_ATTENTION."""
    if isinstance(error, errors.CredentialsRejected):
        return await_credentials(d, run, c, step, error)
    failures = c.step_failures + 1
    message = text(error)
    code = str(getattr(error, "code", type(error).__name__))[:64]
    if failures >= d.settings.step_max_attempts and State(c.state) is not State.NEEDS_ATTENTION:
        log.error("saga.step.gave_up", step=step.value, failures=failures, error=message)
        d.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER, f"{step.value} failed {failures} times: {code}", run=run,
                       fields={"error_code": code, "error_message": message})
        return
    delay = saga.retry_delay(failures, d.settings.retry_backoff_base, d.settings.retry_backoff_cap)
    due = _s(d, delay)
    if c.deadline_at and State(c.state) in saga.BEFORE_AUTHORIZATION:
        due = min(due, max(c.deadline_at, d.clock()))
    d.repo.note(c.id, states={State(c.state)}, claim=run.claim, finish=run.finished, step_failures=failures, next_due_at=due,
                error_code=code, error_message=message)
    log.warning("saga.step.retry_later", step=step.value, failures=failures, delay=delay, error=message)


def await_credentials(d: Deps, run: Run, c: Checkout, step: Step, error: errors.CredentialsRejected) -> None:
    """Plural refuses our client credentials: not this checkout's fault, so not counted as its
    failure. The step is tried again at its due time; a checkout that has waited
    ``CREDENTIALS_WAIT_SECONDS`` (from the refusals' start, or from entering its state if later)
    NEEDS_ATTENTION with the reason, and still goes on by itself once the credentials work."""
    now = d.clock()
    state = State(c.state)
    since = dt.datetime.fromtimestamp(error.since, tz=dt.timezone.utc) if error.since else now
    entered = aware(run.entered_at)
    waited = max((now - max(since, entered) if entered else now - since).total_seconds(), 0.0)
    message = text(f"Plural refuses our client credentials ({error.status} {error.plural_code or '-'}): "
                   "check PLURAL_CLIENT_ID / PLURAL_CLIENT_SECRET; the checkout goes on once they work")
    if waited >= d.settings.credentials_wait_seconds and state is not State.NEEDS_ATTENTION:
        log.error("saga.step.credentials_rejected.gave_up", step=step.value, waited=round(waited))
        d.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER,
                       f"credentials_rejected: {step.value} waited {waited:.0f} s for Plural to accept our client "
                       "credentials", run=run, fields={"error_code": CREDENTIALS_REJECTED, "error_message": message})
        return
    due = _s(d, d.settings.credentials_retry_seconds)
    if c.deadline_at and state in saga.BEFORE_AUTHORIZATION:
        due = min(due, max(c.deadline_at, now))
    if state is State.NEEDS_ATTENTION:  # there for its own reason: only its next look is due
        d.repo.note(c.id, states={state}, claim=run.claim, finish=run.finished,
                    next_due_at=d.engine.due_for(c, state, {}))
        return
    d.repo.note(c.id, states={state}, claim=run.claim, finish=run.finished, next_due_at=due,
                error_code=CREDENTIALS_REJECTED, error_message=message)
    log.warning("saga.step.credentials_rejected", step=step.value, waited=round(waited))


def _our_payment(c: Checkout, order: Order) -> Any:
    for payment in reversed(order.payments):
        if payment.merchant_payment_reference == c.merchant_payment_reference or payment.id == c.plural_payment_id:
            return payment
    return None


#: the checkout's error code when Plural's answer is not about its order as we made it
MISMATCH = "GATEWAY_MISMATCH"


class Mismatch(Exception):
    """Plural's order, looked up for a step, disagrees with the checkout (``mismatch``)."""


def expected_payment(c: Checkout) -> int:
    """What the card pays: the order amount, or for EMI the offer's payment amount (after instant
    discounts; the order itself keeps the full amount)."""
    return c.payment_amount or c.amount_value


def mismatch(d: Deps, c: Checkout, order: Order, *, found: bool = False) -> str | None:
    """What in Plural's order disagrees with the checkout, naming both values; None when it agrees.

    Checked: the reference, the order id once recorded, the type, the order amount and currency
    (the full amount, also for EMI), ``pre_auth``, our payment's amount and currency, what was
    captured and, for an order ``found`` by our reference (after an unknown outcome or a lost
    record), that no other checkout holds it already. A missing value disagrees too: it cannot be
    checked.
    """
    problems: list[str] = []

    def differ(what: str, ours: Any, theirs: Any) -> None:
        if ours != theirs:
            problems.append(f"{what} is {theirs!r} at Plural, {ours!r} here")

    differ("merchant_order_reference", c.merchant_order_reference, order.merchant_order_reference)
    if c.plural_order_id:
        differ("order_id", c.plural_order_id, order.order_id)
    if order.type is not None:
        differ("type", "CHARGE", order.type.upper())
    amount = order.order_amount
    differ("order_amount", c.amount_value, amount.value if amount else None)
    differ("currency", c.currency, amount.currency if amount else None)
    differ("pre_auth", c.pre_auth, order.pre_auth)
    expected = expected_payment(c)
    payment = _our_payment(c, order)
    if payment is not None and payment.payment_amount is not None:
        differ("payment_amount", expected, payment.payment_amount.value)
        differ("payment currency", c.currency, payment.payment_amount.currency)
    view = saga.gateway_view(order.status, payment.status if payment else None)
    if payment is None and view in (saga.GatewayView.AUTHORIZED, saga.GatewayView.PROCESSED):
        problems.append(f"order is {order.status} at Plural with no payment {c.merchant_payment_reference}")
    captured = order.captured_amount()
    if captured > expected or (captured and not c.pre_auth and captured != expected):
        problems.append(f"captured is {captured} at Plural, {expected} here")
    if found:
        other = d.repo.by_plural_order(order.order_id)
        if other is not None and other.id != c.id:
            problems.append(f"order {order.order_id} belongs to checkout {other.id}")
    return text("; ".join(problems)) if problems else None


def flag(d: Deps, c: Checkout, problem: str, reason: str, source: Source, run: Run | None = None) -> bool:
    """Plural's answer disagrees with the checkout: the engine moves it to NEEDS_ATTENTION, with
    nothing of the answer adopted. True when it moved (one already there stays)."""
    log.error("saga.gateway_mismatch", source=source.value, problem=problem)
    moved = d.engine.apply(c.id, Fact.GATEWAY_MISMATCH, source, f"{reason}: Plural disagrees: {problem}", run=run,
                           fields={"error_code": MISMATCH, "error_message": text(problem)},
                           seen=c if run is None else None)
    return moved is not None


def order_fact(d: Deps, c: Checkout, order: Order) -> tuple[Fact | None, dict[str, Any]]:
    """What Plural's order states about this checkout, and the fields that go with it."""
    payment = _our_payment(c, order)
    fact = saga.fact_of(saga.gateway_view(order.status, payment.status if payment else None))
    fields: dict[str, Any] = {"plural_status": order.status}
    if payment is not None and payment.payment_amount and fact in (Fact.PLURAL_AUTHORIZED, Fact.PLURAL_PROCESSED):
        fields["authorized_amount"] = payment.payment_amount.value
    if fact is Fact.PLURAL_AUTHORIZED:
        # the hold runs from Plural's authorization, never from when we heard of it
        now = d.clock()
        at = aware(payment.updated_at if payment is not None else None) or aware(order.updated_at) or now
        at = min(at, now)
        fields["authorized_at"] = at
        fields["capture_deadline_at"] = saga.capture_deadline(at, d.settings.hold_days, d.settings.hold_margin_seconds)
    if fact is Fact.PLURAL_PROCESSED:
        fields["captured_amount"] = order.captured_amount() or (
            payment.payment_amount.value if payment is not None and payment.payment_amount else 0)
    if fact in (Fact.PLURAL_PAYMENT_FAILED, Fact.PLURAL_FAILED):
        detail = payment.error_detail if payment is not None else None
        fields["error_code"] = (detail.code if detail and detail.code else "PAYMENT_FAILED")[:64]
        fields["error_message"] = text(detail.message if detail and detail.message else f"order {order.status}")
    if fact is Fact.PLURAL_CANCELLED and State(c.state) is State.CAPTURING:
        fields.update(error_code="HOLD_CANCELLED", error_message="the authorization was cancelled before the capture")
    return fact, fields


def settle(d: Deps, c: Checkout, order: Order, reason: str, source: Source = Source.POLL,
           run: Run | None = None) -> bool:
    """Hand Plural's view of the order to the engine, once checked against the checkout; True when
    the checkout moved."""
    problem = mismatch(d, c, order)
    if problem is not None:
        return flag(d, c, problem, reason, source, run)
    fact, fields = order_fact(d, c, order)
    if fact is None:
        return False
    moved = d.engine.apply(c.id, fact, source, f"{reason}: Plural reports {order.status}", run=run, fields=fields,
                           seen=c if run is None else None)
    return moved is not None


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


def _past_deadline(d: Deps, c: Checkout) -> bool:
    return bool(c.deadline_at and d.clock() >= c.deadline_at and State(c.state) in saga.BEFORE_AUTHORIZATION)


@dataclass
class Called:
    """The outcome of one written-ahead gateway call: a result, a transient failure, or a refusal."""

    result: Any = None
    transient: BaseException | None = None
    refused: errors.APIError | None = None


def call_ahead(d: Deps, run: Run, step: Step, reference: str | None, call: Callable[[], Any],
               detail: Callable[[Any], str] = lambda _r: "ok", *, idempotent: bool = True) -> Called:
    """Commit a step attempt (``in_flight``) with its reference, make the call, record the outcome:
    ``unknown`` for a transient failure (Plural may have acted), ``failed`` for a refusal.

    A refusal of an idempotent call that repeats a reference used before, or any
    ``DUPLICATE_REQUEST``, is not final on its own (Plural may be answering "in progress" or
    "already done"): it is recorded ``unknown`` and resolved by looking the object up on the next
    run, where it is checked against the checkout before anything is adopted.
    """
    repeated = idempotent and run.tried(step, reference)
    attempt = d.repo.begin_attempt(run.checkout_id, step.value, reference, run.task_id, claim=run.claim,
                                   finish=run.finished)
    mine = StepAttempt(id=attempt, checkout_id=run.checkout_id, step=step.value, reference=reference,
                       task_id=run.task_id, outcome="in_flight")
    run.attempts.append(mine)  # what a chained next step knows of this checkout's attempts

    def finished(outcome: str, what: str) -> None:
        mine.outcome = outcome
        # a checkout run records the outcome in its next transaction (its move, a note, the
        # release); a crash before that leaves the attempt in_flight: unknown, looked up later
        if run.claim is None:
            d.repo.finish_attempt(attempt, outcome, what)
        else:
            run.finished.append((attempt, outcome, what))

    try:
        result = call()
    except errors.CredentialsRejected as exc:
        finished(NOT_SENT, text(exc))  # no access token: the call never left
        return Called(transient=exc)
    except TRANSIENT as exc:
        finished("unknown", text(exc))
        return Called(transient=exc)
    except errors.APIError as exc:
        if repeated or (idempotent and exc.code == "DUPLICATE_REQUEST"):
            # Plural knows this reference (an answer we lost, or a record we no longer have): what
            # it holds is looked up on the next run and adopted only if it matches the checkout
            finished("unknown", text(f"refused a repeated reference: {exc.code}: {exc.message}"))
            return Called(transient=exc)
        finished("failed", text(f"{exc.code}: {exc.message}"))
        return Called(refused=exc)
    finished("succeeded", text(detail(result)))
    return Called(result=result)


def _resolve(d: Deps, run: Run, step: Step, outcome: str, detail: str) -> None:
    unresolved = run.unresolved(step)
    d.repo.resolve_attempts([a.id for a in unresolved if a.id], outcome, text(detail))
    for attempt in unresolved:
        attempt.outcome = outcome


# --- the steps ------------------------------------------------------------------------------


def offer_terms(amount: int, currency: str, products: Iterable[tuple[str, int]], coupon: int | None
                ) -> dict[str, Any]:
    """An order's EMI terms as Plural's affordability calls take them (discovery and validation)."""
    details = [ProductDetail(product_code=code, product_amount=Amount(value=value, currency=currency))
               for code, value in products]
    return {"order_amount": Amount(value=amount, currency=currency), "product_details": details or None,
            "cart_coupon_discount_amount": Amount(value=coupon, currency=currency) if coupon else None}


def _emi_terms(c: Checkout) -> dict[str, Any]:
    products = [(p["product_code"], p["product_amount"]) for p in (c.emi_choice or {}).get("product_details") or []]
    return offer_terms(c.amount_value, c.currency, products, c.cart_coupon_discount)


def _offer_refused(d: Deps, run: Run, code: str, message: str) -> None:
    d.vault.drop_card(run.checkout_id)
    state_fact(d, run, Fact.OFFER_REFUSED, f"EMI offer refused: {code}", error_code=code[:64],
               error_message=text(message))


def check_offer(d: Deps, run: Run, c: Checkout) -> None:
    """EMI, before any order: discover the offers for this order (Plural's figures, not the
    backend's), take the customer's issuer and tenure, and have Plural validate exactly that offer
    for this card. Only ELIGIBLE goes on; anything else fails the checkout with its code."""
    card = d.vault.card(c.id)
    if card is None:
        return _card_gone(d, run)
    terms = _emi_terms(c)
    debit = c.payment_method == "DEBIT_EMI"
    card_only = PaymentOption(card_details=CardDetails(card_number=card.number))
    # Debit EMI is offered per customer: Plural lists debit issuers for a named card
    discovery = OfferDiscoveryRequest(**terms, payment_option=card_only if debit else None)
    got = call_ahead(d, run, Step.CHECK_OFFER, None, lambda: d.plural.discover_offers(discovery),
                     lambda r: f"{len(r.issuers)} issuers", idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CHECK_OFFER, got.transient)
    if got.refused:
        return _offer_refused(d, run, got.refused.code, got.refused.message)
    choice = c.emi_choice or {}
    try:
        chosen = emi.choose(got.result.raw, str(choice.get("issuer_id")), str(choice.get("tenure_id")),
                            choice.get("expected_monthly_emi"), card_named=debit)
    except emi.OfferRefused as refused:
        return _offer_refused(d, run, refused.code, refused.message)
    validation = OfferValidationRequest(
        order_amount=terms["order_amount"], payment_amount=Amount(value=chosen.payment_amount, currency=c.currency),
        offer_data={"offer_details": chosen.offer_details}, payment_method=c.payment_method,
        payment_option=card_only, product_details=terms["product_details"],
        cart_coupon_discount_amount=terms["cart_coupon_discount_amount"])
    got = call_ahead(d, run, Step.CHECK_OFFER, None, lambda: d.plural.validate_offer(validation),
                     lambda r: r.code, idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CHECK_OFFER, got.transient)
    if got.refused:
        return _offer_refused(d, run, got.refused.code, got.refused.message)
    if got.result.code != "ELIGIBLE":
        return _offer_refused(d, run, got.result.code, got.result.message or "offer not eligible")
    state_fact(d, run, Fact.OFFER_ELIGIBLE, f"offer eligible: {chosen.offer_details.get('name')}, "
                                            f"{chosen.offer_details['tenure'].get('name')}, {chosen.monthly} a month",
               offer=chosen.offer_details, payment_amount=chosen.payment_amount)


def create_order(d: Deps, run: Run, c: Checkout) -> None:
    if run.unresolved(Step.CREATE_ORDER):
        try:
            order = d.plural.get_order_by_reference(c.merchant_order_reference)
        except errors.NotFound:
            _resolve(d, run, Step.CREATE_ORDER, "failed", "no order at Plural")
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CREATE_ORDER, exc)
        else:
            problem = mismatch(d, c, order, found=True)
            _resolve(d, run, Step.CREATE_ORDER, "failed" if problem else "succeeded", problem or order.order_id)
            if problem is not None:
                flag(d, c, problem, "order found by reference", Source.STEP, run)
                return
            state_fact(d, run, Fact.ORDER_CREATED, "order found by reference", plural_order_id=order.order_id,
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
        cart_coupon_discount_amount=(Amount(value=c.cart_coupon_discount, currency=c.currency)
                                     if c.cart_coupon_discount else None),
    )
    got = call_ahead(d, run, Step.CREATE_ORDER, c.merchant_order_reference,
                     lambda: d.plural.create_order(request), lambda o: o.order_id)
    if got.transient:
        return retry_later(d, run, c, Step.CREATE_ORDER, got.transient)
    if got.refused:
        exc = got.refused
        state_fact(d, run, Fact.ORDER_REFUSED, f"order refused: {exc.code}", error_code=exc.code[:64],
                   error_message=text(exc.message))
        return
    order = got.result
    # Plural answers a repeated reference with the order it already has: it may not be ours. (No
    # other checkout can hold an order with our reference: references are unique here.)
    problem = mismatch(d, c, order)
    if problem is not None:
        flag(d, c, problem, "order created", Source.STEP, run)
        return
    state_fact(d, run, Fact.ORDER_CREATED, "order created", plural_order_id=order.order_id,
               plural_status=order.status)


def _card_gone(d: Deps, run: Run) -> None:
    state_fact(d, run, Fact.CARD_GONE, "card data expired before payment", error_code="CARD_DATA_EXPIRED",
               error_message="the card data was not used in time and has been discarded")


def card_details(d: Deps, run: Run, c: Checkout) -> None:
    card = d.vault.card(c.id)
    if card is None:
        return _card_gone(d, run)
    request = CardDetailsRequest(amount=str(c.amount_value),
                                 card_details=[CardIdentifier(payment_identifier=card.number)])
    got = call_ahead(d, run, Step.CARD_DETAILS, None, lambda: d.plural.get_card_details(request),
                     idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CARD_DETAILS, got.transient)
    if got.refused:
        d.vault.drop_card(c.id)
        exc = got.refused
        state_fact(d, run, Fact.CARD_REFUSED, f"card refused: {exc.code}", error_code=exc.code[:64],
                   error_message=text(exc.message))
        return
    answer = got.result
    info = answer.card_payment_details[0] if answer.card_payment_details else None
    native = saga.uses_native_otp(c.payment_method, bool(info and info.is_native_otp_supported))
    state_fact(d, run, Fact.CARD_CHECKED, "card details known", native_otp=native,
               card_network=(info.card_network if info else None), card_issuer=(info.card_issuer if info else None))


def create_payment(d: Deps, run: Run, c: Checkout) -> None:
    if run.unresolved(Step.CREATE_PAYMENT):
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CREATE_PAYMENT, exc)
        payment = _our_payment(c, order)
        _resolve(d, run, Step.CREATE_PAYMENT, "succeeded" if payment else "failed",
                 payment.id if payment else "no payment at Plural")
        if payment is not None:
            d.vault.drop_card(c.id)
            return _after_payment(d, run, c, order, "payment found at Plural")
    card = d.vault.card(c.id)
    if card is None:
        # an earlier run may have made the payment and dropped the card: ask Plural
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CREATE_PAYMENT, exc)
        if _our_payment(c, order) is not None:
            return _after_payment(d, run, c, order, "payment found at Plural")
        return _card_gone(d, run)
    request = CreatePaymentRequest(payments=[PaymentRequest(
        merchant_payment_reference=c.merchant_payment_reference,
        payment_method=c.payment_method,
        # EMI: what the offer says the card pays (the loan after instant discounts)
        payment_amount=Amount(value=c.payment_amount or c.amount_value, currency=c.currency),
        payment_option=PaymentOption(card_details=CardDetails(
            name=card.name, card_number=card.number, cvv=card.cvv, expiry_month=card.expiry_month,
            expiry_year=card.expiry_year, registered_mobile_number=card.registered_mobile_number)),
        offer_data={"offer_details": c.offer} if c.offer else None,
        device_info=DeviceInfo.model_validate(c.device_info) if c.device_info else None,
    )])
    got = call_ahead(d, run, Step.CREATE_PAYMENT, c.merchant_payment_reference,
                     lambda: d.plural.create_payment(c.plural_order_id, request), lambda o: o.order_id)
    if got.transient:
        return retry_later(d, run, c, Step.CREATE_PAYMENT, got.transient)
    d.vault.drop_card(c.id)
    if got.refused:
        exc = got.refused
        state_fact(d, run, Fact.PAYMENT_REFUSED, f"payment refused: {exc.code}", error_code=exc.code[:64],
                   error_message=text(exc.message))
        return
    _after_payment(d, run, c, got.result, "payment created")


def _after_payment(d: Deps, run: Run, c: Checkout, order: Order, reason: str) -> None:
    problem = mismatch(d, c, order)
    if problem is not None:
        flag(d, c, problem, reason, Source.STEP, run)
        return
    payment = _our_payment(c, order)
    fields: dict[str, Any] = {"plural_payment_id": payment.id if payment else None,
                              "challenge_url": order.challenge_url, "plural_status": order.status}
    if payment is not None and payment.status == "FAILED":
        detail = payment.error_detail
        state_fact(d, run, Fact.PAYMENT_REFUSED, f"{reason}: payment failed", **fields,
                   error_code=(detail.code if detail and detail.code else "PAYMENT_FAILED")[:64],
                   error_message=text(detail.message if detail and detail.message else "payment failed"))
        return
    fact = Fact.PAYMENT_NATIVE_OTP if c.native_otp else Fact.PAYMENT_REDIRECT
    state_fact(d, run, fact, reason, **fields)


def generate_otp(d: Deps, run: Run, c: Checkout) -> None:
    got = call_ahead(d, run, Step.GENERATE_OTP, c.plural_payment_id, lambda: d.plural.generate_otp(c.plural_payment_id),
                     lambda a: f"resend_after={a.resend_after_seconds}", idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.GENERATE_OTP, got.transient)
    if got.refused and _already_generated(got.refused):
        # an earlier call whose answer was lost (a crash, a timeout) generated it: the OTP was sent.
        # Its resend_after was lost with it: Plural's documented 180 s from now is never too early
        _resolve(d, run, Step.GENERATE_OTP, "succeeded", "OTP already generated")
        state_fact(d, run, Fact.OTP_SENT, "OTP already generated by an earlier call: sent",
                   otp_resend_at=_s(d, LOST_RESEND_AFTER), otp_attempts_left=_attempts_left(d, c))
        return
    if got.refused:
        state_fact(d, run, Fact.OTP_UNAVAILABLE, f"native OTP refused ({got.refused.code}): bank page instead")
        return
    answer = got.result
    _resolve(d, run, Step.GENERATE_OTP, "succeeded", "an OTP was generated by a later call")
    state_fact(d, run, Fact.OTP_SENT, "OTP sent", otp_resend_at=_s(d, answer.resend_after_seconds or 0),
               otp_attempts_left=_attempts_left(d, c))


#: Plural's sample resend_after, for an OTP generated by a call whose answer was lost
LOST_RESEND_AFTER = 180


def _already_generated(exc: errors.APIError) -> bool:
    """A second Generate OTP refused because the first one was made (the sandbox's ``refuse``)."""
    return "OTP_ALREADY_GENERATED" in (exc.code, (exc.details or {}).get("reason"))


def _attempts_left(d: Deps, c: Checkout) -> int:
    """Wrong OTPs still allowed, from our own count (OTP_MAX_ATTEMPTS less the refusals we had)."""
    return d.settings.otp_max_attempts if c.otp_attempts_left is None else c.otp_attempts_left


def submit_otp(d: Deps, run: Run, c: Checkout) -> None:
    if run.unresolved(Step.SUBMIT_OTP):
        # an OTP whose answer never came may have been used: never send it again. Plural decides.
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.SUBMIT_OTP, exc)
        fact, _fields = order_fact(d, c, order)
        _resolve(d, run, Step.SUBMIT_OTP, "succeeded" if fact else "failed", f"order {order.status}")
        d.vault.drop_otp(c.id, c.otp_ref)
        if settle(d, c, order, "OTP outcome found at Plural", Source.POLL, run):
            return
        state_fact(d, run, Fact.OTP_NOT_USED, "OTP outcome unknown and Plural still waiting: ask again",
                   error_code="OTP_UNCONFIRMED", error_message="the OTP could not be confirmed; submit it again")
        return
    otp = d.vault.otp(c.id, c.otp_ref)  # the OTP of the submission whose move brought the checkout here
    if otp is None:
        state_fact(d, run, Fact.OTP_NOT_USED, "OTP expired before it was sent", error_code="OTP_EXPIRED",
                   error_message="submit the OTP again")
        return
    got = call_ahead(d, run, Step.SUBMIT_OTP, c.plural_payment_id, lambda: d.plural.submit_otp(c.plural_payment_id, otp),
                     idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.SUBMIT_OTP, got.transient)
    d.vault.drop_otp(c.id, c.otp_ref)
    if got.refused:
        return _otp_refused(d, run, c, got.refused)
    _confirm(d, run, c, "OTP accepted")


def _confirm(d: Deps, run: Run, c: Checkout, reason: str) -> None:
    """After the customer finished: ask Plural for the outcome at once; poll if it is not there yet."""
    try:
        order = d.plural.get_order(c.plural_order_id)
    except TRANSIENT as exc:
        log.warning("saga.confirm.deferred", error=text(exc))
        state_fact(d, run, Fact.OTP_ACCEPTED, f"{reason}; outcome to be polled")
        return
    if not settle(d, c, order, reason, Source.STEP, run):
        state_fact(d, run, Fact.OTP_ACCEPTED, f"{reason}; Plural reports {order.status}")


def _otp_refused(d: Deps, run: Run, c: Checkout, exc: errors.APIError) -> None:
    # counted from our own record: Plural's error details carry only source, step and reason
    left = max(_attempts_left(d, c) - 1, 0)
    try:
        order = d.plural.get_order(c.plural_order_id)
    except TRANSIENT:
        order = None
    if order is not None and settle(d, c, order, f"OTP refused ({exc.code})", Source.STEP, run):
        return
    fields: dict[str, Any] = {"error_code": exc.code[:64], "error_message": text(exc.message),
                              "otp_attempts_left": left}
    state_fact(d, run, Fact.OTP_WRONG, f"OTP refused ({exc.code})", **fields)


def resend_otp(d: Deps, run: Run, c: Checkout) -> None:
    got = call_ahead(d, run, Step.RESEND_OTP, c.plural_payment_id, lambda: d.plural.resend_otp(c.plural_payment_id),
                     lambda a: f"resend_after={a.resend_after_seconds}", idempotent=False)
    if got.refused:
        exc = got.refused
        # the resend timer stays ours (from the last Generate / Resend answer's meta_data.resend_after)
        fields: dict[str, Any] = {"error_code": exc.code[:64], "error_message": text(exc.message)}
        d.repo.note(c.id, states={State.AWAITING_OTP}, claim=run.claim, finish=run.finished, **fields)
        return
    if got.transient:
        d.repo.note(c.id, states={State.AWAITING_OTP}, claim=run.claim, finish=run.finished, error_code="RESEND_FAILED",
                    error_message="the OTP could not be resent; try again")
        return
    answer = got.result
    d.repo.note(c.id, states={State.AWAITING_OTP}, claim=run.claim, finish=run.finished,
                otp_resend_at=_s(d, answer.resend_after_seconds or 0), error_code=None, error_message=None)


def _order_id(d: Deps, run: Run, c: Checkout) -> str | None:
    """Plural's order id, looked up by our reference when a crash kept us from recording it."""
    if c.plural_order_id:
        return c.plural_order_id
    try:
        order = d.plural.get_order_by_reference(c.merchant_order_reference)
    except errors.NotFound:
        return None
    problem = mismatch(d, c, order, found=True)
    if problem is not None:
        raise Mismatch(problem)
    order_id = order.order_id
    d.repo.note(c.id, claim=run.claim, finish=run.finished, plural_order_id=order_id)
    c.plural_order_id = order_id
    return order_id


def poll_order(d: Deps, run: Run, c: Checkout) -> None:
    """Get Order while waiting for the customer, while watching a refused cancel, and (slowly)
    while a checkout NEEDS_ATTENTION."""
    state = State(c.state)
    try:
        order_id = _order_id(d, run, c)
        order = d.plural.get_order(order_id) if order_id else None
    except TRANSIENT as exc:
        if _past_deadline(d, c):
            d.engine.apply(c.id, Fact.DEADLINE_PASSED, Source.TIMER, "customer action deadline passed", run=run,
                           fields={"cancel_reason": "CUSTOMER_TIMEOUT"})
            return
        if state is State.NEEDS_ATTENTION:
            d.repo.note(c.id, states={state}, claim=run.claim, finish=run.finished, next_due_at=d.engine.due_for(c, state, {}))
            return
        return retry_later(d, run, c, Step.POLL_ORDER, exc)
    if order is not None and settle(d, c, order, "polled", Source.POLL, run):
        return
    if state is State.NEEDS_ATTENTION and (c.attention_reason or "").startswith("credentials_rejected"):
        # Plural answered us (a token was issued): what stopped this checkout is gone
        if d.engine.apply(c.id, Fact.CREDENTIALS_ACCEPTED, Source.TIMER,
                          "credentials accepted again: back to where it waited", run=run,
                          fields={"error_code": None, "error_message": None}) is not None:
            return
    if _past_deadline(d, c):
        d.engine.apply(c.id, Fact.DEADLINE_PASSED, Source.TIMER, "customer action deadline passed", run=run,
                       fields={"cancel_reason": "CUSTOMER_TIMEOUT",
                               "plural_status": order.status if order else None})
        return
    if state is State.WATCHING and c.watch_until and d.clock() >= c.watch_until:
        d.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER, "Plural's side never became final while watched",
                       run=run)
        return
    polls = c.polls + 1
    d.repo.note(c.id, states={state}, claim=run.claim, finish=run.finished, polls=polls,
                next_due_at=d.engine.due_for(c, state, {"polls": polls}),
                plural_status=order.status if order else c.plural_status)


def cancel_order(d: Deps, run: Run, c: Checkout) -> None:
    """Cancel at Plural, or find out that no money can move any more. Plural cancels only an
    AUTHORIZED order; a refusal is resolved from Get Order, never retried blindly."""
    try:
        order_id = _order_id(d, run, c)
    except TRANSIENT as exc:
        return retry_later(d, run, c, Step.CANCEL_ORDER, exc)
    if order_id is None:
        state_fact(d, run, Fact.NOTHING_TO_CANCEL, "cancelled before any order reached Plural")
        return
    try:
        order = d.plural.get_order(order_id)
    except TRANSIENT as exc:
        return retry_later(d, run, c, Step.CANCEL_ORDER, exc)
    problem = mismatch(d, c, order)
    if problem is not None:
        raise Mismatch(problem)
    fact, _fields = order_fact(d, c, order)
    # an earlier cancel whose answer was lost took effect exactly when Plural now says CANCELLED
    _resolve(d, run, Step.CANCEL_ORDER, "succeeded" if fact is Fact.PLURAL_CANCELLED else "failed",
             f"order {order.status}")
    if fact in (Fact.PLURAL_CANCELLED, Fact.PLURAL_PROCESSED, Fact.PLURAL_FAILED, Fact.PLURAL_PAYMENT_FAILED):
        settle(d, c, order, "before cancelling", Source.POLL, run)
        return
    if fact is None and _our_payment(c, order) is None:
        # no payment of ours exists, and a cancelling checkout never makes one (this run holds the
        # checkout, so no payment step runs beside it): no money can move. Plural would refuse
        # to cancel an order with no payment anyway.
        d.vault.drop_card(c.id)
        state_fact(d, run, Fact.NOTHING_TO_CANCEL, "no payment at Plural and none will be made",
                   plural_status=order.status)
        return
    # a refusal is checked against Get Order below, repeated or not
    got = call_ahead(d, run, Step.CANCEL_ORDER, order_id, lambda: d.plural.cancel_order(order_id), lambda o: o.status,
                     idempotent=False)
    if got.transient:
        return retry_later(d, run, c, Step.CANCEL_ORDER, got.transient)
    if got.refused:
        try:
            truth = d.plural.get_order(order_id)
        except TRANSIENT as again:
            return retry_later(d, run, c, Step.CANCEL_ORDER, again)
        if settle(d, c, truth, f"cancel refused ({got.refused.code})", Source.POLL, run):
            return
        # the payment is still open at Plural: cancelled for the merchant, watched until Plural is final
        state_fact(d, run, Fact.CANCEL_REFUSED, f"cancel refused ({got.refused.code}); watching the open payment",
                   plural_status=truth.status)
        return
    cancelled = got.result
    # an authorization that arrived after the customer's deadline is released, and says so
    late = fact is Fact.PLURAL_AUTHORIZED and c.cancel_reason == "CUSTOMER_TIMEOUT"
    if c.cancel_reason == "HOLD_EXPIRED":
        reason = "hold released before it lapsed: no delivery by the capture deadline"
    else:
        reason = "authorized after the deadline: hold released" if late else "cancelled at Plural"
    fields: dict[str, Any] = {"plural_status": cancelled.status}
    if late:
        fields["finished_late"] = True
    state_fact(d, run, Fact.CANCEL_CONFIRMED, reason, **fields)


def captured_with(order: Order, reference: str) -> int | None:
    """The amount Plural captured under ``reference``, or None when it has no such capture."""
    for payment in order.payments:
        for capture in payment.capture_data or []:
            if capture.merchant_capture_reference == reference and capture.capture_amount:
                return capture.capture_amount.value
    return None


def _follow_capture(d: Deps, run: Run, c: Checkout, order: Order, reason: str, source: Source) -> bool:
    """Settle a capturing checkout from Plural's order, once checked; True when it moved."""
    amount = captured_with(order, c.merchant_capture_reference)
    asked = c.capture_amount or c.authorized_amount
    problem = mismatch(d, c, order)
    if problem is None and amount is not None and amount != asked:
        problem = f"capture {c.merchant_capture_reference} is {amount} at Plural, {asked} here"
    if problem is not None:
        return flag(d, c, problem, reason, source, run)
    if amount is not None:
        moved = d.engine.apply(c.id, Fact.PLURAL_PROCESSED, source, f"{reason}: captured", run=run,
                               fields={"captured_amount": amount, "plural_status": order.status})
        return moved is not None
    return settle(d, c, order, reason, source, run)


def capture_order(d: Deps, run: Run, c: Checkout) -> None:
    if run.unresolved(Step.CAPTURE_ORDER):
        try:
            order = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as exc:
            return retry_later(d, run, c, Step.CAPTURE_ORDER, exc)
        found = captured_with(order, c.merchant_capture_reference) is not None
        _resolve(d, run, Step.CAPTURE_ORDER, "succeeded" if found else "failed", f"order {order.status}")
        if _follow_capture(d, run, c, order, "capture found at Plural", Source.POLL):
            return
    amount = c.capture_amount or c.authorized_amount
    request = CaptureRequest(merchant_capture_reference=c.merchant_capture_reference,
                             capture_amount=Amount(value=amount, currency=c.currency))
    got = call_ahead(d, run, Step.CAPTURE_ORDER, c.merchant_capture_reference,
                     lambda: d.plural.capture_order(c.plural_order_id, request), lambda o: o.status)
    if got.transient:
        return retry_later(d, run, c, Step.CAPTURE_ORDER, got.transient)
    if got.refused:
        exc = got.refused
        try:
            truth = d.plural.get_order(c.plural_order_id)
        except TRANSIENT as again:
            return retry_later(d, run, c, Step.CAPTURE_ORDER, again)
        if not _follow_capture(d, run, c, truth, f"capture refused ({exc.code})", Source.POLL):
            state_fact(d, run, Fact.CAPTURE_REFUSED, f"capture refused ({exc.code}); the hold stands",
                       error_code=exc.code[:64], error_message=text(exc.message))
        return
    if not _follow_capture(d, run, c, got.result, "captured", Source.STEP):
        retry_later(d, run, c, Step.CAPTURE_ORDER, errors.ResponseFormatError("capture answer shows no capture"))


def expire_hold(d: Deps, run: Run, c: Checkout) -> None:
    """An authorization with no delivery by its capture deadline is released before it lapses."""
    if c.capture_deadline_at is None or d.clock() < c.capture_deadline_at:
        d.repo.note(c.id, states={State.AUTHORIZED}, claim=run.claim, finish=run.finished, next_due_at=c.capture_deadline_at)
        return
    d.engine.apply(c.id, Fact.HOLD_DUE, Source.TIMER, "no delivery by the capture deadline: releasing the hold",
                   run=run, fields={"cancel_reason": "HOLD_EXPIRED"})


STEPS: dict[Step, Callable[[Deps, Run, Checkout], None]] = {
    Step.CHECK_OFFER: check_offer,
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
    """Run one step for one checkout: claim it, and act only if it is (still) in a state the step
    belongs to. A second delivery while a run holds the checkout does nothing."""
    if step is Step.REFUND:
        raise ValueError("a refund step runs through orchestrator.saga.dispatch, with a refund id")
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
    if step is not Step.CANCEL_ORDER and step is not Step.POLL_ORDER and _past_deadline(d, c):
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

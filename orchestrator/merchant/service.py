"""What the merchant can ask of a checkout: create, read, submit or resend an OTP, cancel.

Each action validates, writes, and enqueues only after its write committed; a refused action
writes nothing. Errors are ``CheckoutError`` with an HTTP status and a machine-readable code.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from orchestrator.outbound import delivery
from orchestrator.outbound.outbox import EVENT_TYPES, envelope
from orchestrator.saga.deps import TRANSIENT
from orchestrator.saga.steps.offer import offer_terms
from orchestrator.store import reports
from orchestrator.telemetry import metrics
from orchestrator.domain import methods, saga
from orchestrator.domain.cards import digits_only, luhn_ok, network_of
from orchestrator.domain.saga import Fact, Source, State, Step
from orchestrator.store.models import Checkout, new_checkout_id
from orchestrator.store.idempotency import KeyTaken, Keyed
from orchestrator.saga.engine import Engine
from orchestrator.merchant.refunds import RefundRefused, refunds_of, request_refund, resolve_refund
from orchestrator.saga.deps import Deps
from orchestrator.telemetry.logs import get_logger, mask_text
from orchestrator.plural import errors as plural_errors
from orchestrator.plural.models import CardDetails, OfferDiscoveryRequest, PaymentOption
from orchestrator.outbound.views import checkout_view, summary_view
from orchestrator.store.vault import CardData
from orchestrator.merchant.errors import CheckoutError
from orchestrator.merchant.operators import OperatorActions
from orchestrator.merchant.schemas import CheckoutIn, DiscoveryIn

log = get_logger("orchestrator.merchant.service")

#: Plural's documented sample cards, which fail Luhn, are accepted only against the sandbox
SANDBOX_SAMPLE_CARDS = frozenset({"2870287028702870", "4690478199123123", "4690000046910000"})


class CheckoutService(OperatorActions):
    """The merchant's and the operator's commands. Its collaborators come from the one bootstrap
    (``entrypoints/runtime.py``, or a test's harness): the saga's ``Deps`` and its ``Engine``."""

    def __init__(self, deps: Deps, engine: Engine | None = None):
        self.deps = deps
        self.settings, self.repo, self.vault, self.enqueue, self.clock = (deps.settings, deps.repo, deps.vault,
                                                                          deps.enqueue, deps.clock)
        self.plural, self.announce, self.kick_events = deps.plural, deps.announce, deps.kick_events
        self.engine = engine if engine is not None else deps.engine

    # --- create -------------------------------------------------------------------------

    def _within_ceiling(self, amount: int) -> None:
        """Plural refuses an order above its maximum; refused here first, with nothing created."""
        limit = self.settings.max_order_amount
        if amount > limit:
            raise CheckoutError(422, "AMOUNT_LIMIT_EXCEEDED", f"an order is at most {limit} minor units "
                                "(MAX_ORDER_AMOUNT)", maximum=limit)

    def create(self, req: CheckoutIn, keyed: Keyed | None = None) -> tuple[Checkout, bool]:
        """A new checkout (True), or the one its merchant_order_reference already names (False).
        ``keyed``: the request's Idempotency-Key, stored with the new checkout's answer (202, its
        view) in the checkout's own transaction; a key another request committed first is a
        ``CheckoutError`` 409 ``IDEMPOTENCY_KEY_TAKEN`` with nothing written."""
        self._within_ceiling(req.amount.value)
        sandbox = self.settings.plural_env.value == "sandbox"
        if not luhn_ok(req.card.number) and not (sandbox and req.card.number in SANDBOX_SAMPLE_CARDS):
            raise CheckoutError(400, "INVALID_CARD", "card number fails the Luhn check")
        # a repeated merchant_order_reference is found by the insert's unique constraint (no read first)
        checkout_id = new_checkout_id()
        now = self.clock()
        start = methods.rule(req.payment_method).first_state
        row = Checkout(
            id=checkout_id,
            state=start.value,
            merchant_order_reference=req.merchant_order_reference or checkout_id,
            merchant_payment_reference=f"{checkout_id}-p1",
            merchant_capture_reference=f"{checkout_id}-c1",
            amount_value=req.amount.value,
            currency=req.amount.currency,
            pre_auth=req.pre_auth,
            payment_method=req.payment_method,
            customer=req.customer.model_dump(mode="json", exclude_none=True) if req.customer else None,
            callback_url=req.callback_url,
            failure_callback_url=req.failure_callback_url,
            device_info=req.device_info.model_dump(mode="json", exclude_none=True) if req.device_info else None,
            emi_choice=_emi_choice(req),
            cart_coupon_discount=req.cart_coupon_discount_amount.value if req.cart_coupon_discount_amount else None,
            card_last4=req.card.number[-4:],
            card_network=network_of(req.card.number),
            deadline_at=now + dt.timedelta(seconds=self.settings.customer_action_timeout),
            next_due_at=now + dt.timedelta(seconds=self.settings.step_lease_seconds),
            created_at=now,
            updated_at=now,
        )
        card = CardData(number=req.card.number, name=req.card.name, cvv=req.card.cvv,
                        expiry_month=req.card.expiry_month, expiry_year=req.card.expiry_year,
                        registered_mobile_number=req.card.registered_mobile_number)
        try:
            self.vault.put_card(checkout_id, card, self.settings.card_ttl_seconds)
        except Exception as exc:
            # Redis is away: the database is the source of truth, so the row holds the card sealed
            # with the vault's key, and its first step (once Redis is back) moves it into the vault
            log.warning("checkout.card_sealed", error=type(exc).__name__)
            row.sealed_card = self.vault.seal_card(card)

        def drop_card() -> None:
            if row.sealed_card is None:
                self.vault.drop_card(checkout_id)

        if keyed is not None:
            keyed.answer = (202, json.dumps(self.view(row), ensure_ascii=False, separators=(",", ":")))
        try:
            saved, created = self.repo.insert(row, keyed)
        except KeyTaken:
            drop_card()
            raise CheckoutError(409, "IDEMPOTENCY_KEY_TAKEN", "another request with this Idempotency-Key "
                                "was answered first") from None
        except Exception:
            drop_card()
            raise
        if not created:  # a concurrent request with the same reference won the race
            drop_card()
            return self._same_or_conflict(saved, req), False
        metrics.CHECKOUTS_CREATED.labels(saved.payment_method).inc()
        log.info("checkout.created", saga_id=saved.id, amount=saved.amount_value, currency=saved.currency,
                 pre_auth=saved.pre_auth, payment_method=saved.payment_method)
        step = saga.next_step(start)
        assert step is not None
        self.engine.send(step, saved.id)
        return saved, True

    @staticmethod
    def _same_or_conflict(existing: Checkout, req: CheckoutIn) -> Checkout:
        same = (existing.amount_value == req.amount.value and existing.currency == req.amount.currency
                and existing.pre_auth == req.pre_auth and existing.card_last4 == req.card.number[-4:]
                and existing.payment_method == req.payment_method and existing.emi_choice == _emi_choice(req)
                and existing.cart_coupon_discount == (req.cart_coupon_discount_amount.value
                                                      if req.cart_coupon_discount_amount else None))
        if not same:
            raise CheckoutError(409, "REFERENCE_CONFLICT",
                                "merchant_order_reference already names a different checkout", id=existing.id)
        return existing

    # --- read ---------------------------------------------------------------------------

    def get(self, checkout_id: str) -> Checkout:
        row = self.repo.get(checkout_id)
        if row is None:
            raise CheckoutError(404, "CHECKOUT_NOT_FOUND", f"no checkout {checkout_id}")
        return row

    def show(self, checkout_id: str) -> dict[str, Any]:
        """The merchant's view of one checkout, from one read."""
        row, history, refunds = self.repo.snapshot(checkout_id)
        if row is None:
            raise CheckoutError(404, "CHECKOUT_NOT_FOUND", f"no checkout {checkout_id}")
        return self.view(row, (history, refunds))

    def view(self, c: Checkout, trail: tuple[list[Any], list[Any]] | None = None) -> dict[str, Any]:
        """The merchant's view of ``c``; ``trail`` (its history and refunds) is read if not given."""
        history, refunds = trail if trail is not None else self.repo.trail(c)
        return checkout_view(c, history, refunds, self.clock())

    # --- events and lists -------------------------------------------------------------

    def events(self, after: str | None, kind: str | None, limit: int) -> dict[str, Any]:
        """Events after the cursor ``after`` (oldest first), of one ``kind`` if given; the cursor of
        the last one comes back as ``next``. On PostgreSQL the last two seconds are held back, so
        an event whose transaction commits after a later-numbered one is never skipped."""
        if kind is not None and kind not in EVENT_TYPES:
            raise CheckoutError(400, "INVALID_REQUEST", f"type must be one of {sorted(EVENT_TYPES)}")
        try:
            start = int(after) if after else 0
        except ValueError:
            start = -1
        if not 0 <= start < 2**63:  # an event id is a 64-bit integer: a larger one is no cursor of ours
            raise CheckoutError(400, "INVALID_REQUEST", "after must be a cursor this API returned")
        rows = reports.events_after(self.repo, start, kind, limit, self.clock())
        events = [{**envelope(e), "delivery": {"status": e.status, "attempts": e.attempts}} for e in rows]
        return {"events": events, "next": str(rows[-1].id) if rows else (after or "0")}

    def redeliver(self, event_id: str) -> dict[str, Any]:
        event = delivery.redeliver(self.repo, event_id, self.clock())
        if event is None:
            raise CheckoutError(404, "EVENT_NOT_FOUND", f"no event {event_id}")
        self.kick_events()
        return {**envelope(event), "delivery": {"status": event.status, "attempts": event.attempts}}

    def list_checkouts(self, status: str | None, created_after: dt.datetime | None, cursor: str | None,
                       limit: int) -> dict[str, Any]:
        """Checkouts, newest first, optionally of one public ``status`` and created after a time;
        ``next_cursor`` continues the list (stable under inserts: it names the last row shown)."""
        if status is not None and status not in set(saga.PUBLIC_STATUS.values()):
            raise CheckoutError(400, "INVALID_REQUEST", f"status must be one of {sorted(set(saga.PUBLIC_STATUS.values()))}")
        states = None if status is None else [s.value for s, p in saga.PUBLIC_STATUS.items() if p == status]
        before: tuple[dt.datetime, str] | None = None
        if cursor:
            try:
                at_text, last_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
                at = dt.datetime.fromisoformat(at_text)
                if at.tzinfo is None:
                    raise ValueError("a cursor's time has its zone")
                at = at.astimezone(dt.timezone.utc)
            except (ValueError, OverflowError):
                raise CheckoutError(400, "INVALID_REQUEST", "cursor must be one this API returned") from None
            before = (at, last_id)
        rows = reports.list_checkouts(self.repo, states, created_after, before, limit)
        nxt = None
        if len(rows) == limit:
            last = rows[-1]
            nxt = base64.urlsafe_b64encode(f"{last.created_at.isoformat()}|{last.id}".encode()).decode()
        return {"checkouts": [summary_view(c) for c in rows], "next_cursor": nxt}

    # --- offers -------------------------------------------------------------------------

    def overview(self, limit: int = 20) -> dict[str, Any]:
        """Where checkouts stand (the operator's status, the console, the metrics' gauges)."""
        return reports.overview(self.repo, self.clock(), limit=limit, rejected_since=self.credentials_rejected_since())

    def checkout_detail(self, checkout_id: str) -> dict[str, Any] | None:
        """One checkout's history, gateway calls, webhooks, events and refunds, or None."""
        return reports.checkout_detail(self.repo, checkout_id)

    def credentials_rejected_since(self) -> float | None:
        """Since when Plural has refused our client credentials (the token store's shared flag),
        or None: accepted, or not known in this process (no Plural client, Redis away)."""
        if self.plural is None:
            return None
        try:
            since = self.plural.requestor.tokens.rejected_since()
        except Exception as exc:  # a status read never fails on the flag
            log.warning("credentials.flag_unreadable", error=type(exc).__name__)
            return None
        return since if isinstance(since, (int, float)) else None

    def discover(self, req: DiscoveryIn) -> dict[str, Any]:
        """Plural's offer discovery for these terms, passed on exactly as Plural answered."""
        self._within_ceiling(req.amount.value)
        terms = offer_terms(req.amount.value, req.amount.currency,
                            [(p.product_code, p.product_amount.value) for p in req.product_details or []],
                            req.cart_coupon_discount_amount.value if req.cart_coupon_discount_amount else None)
        request = OfferDiscoveryRequest(
            **terms, payment_option=(PaymentOption(card_details=CardDetails(card_number=digits_only(req.card.number)))
                                     if req.card else None))
        try:
            return self.plural.discover_offers(request).raw
        except TRANSIENT:  # the saga's own line between "try again" and "Plural said no"
            raise CheckoutError(503, "UNAVAILABLE", "Plural did not answer offer discovery; try again",
                                unavailable="gateway") from None
        except plural_errors.APIError as exc:
            raise CheckoutError(422, exc.code[:64], mask_text(exc.message)[:300]) from None

    # --- customer and merchant actions --------------------------------------------------

    def submit_otp(self, checkout_id: str, otp: str) -> Checkout:
        return self._submit_otp(checkout_id, otp)[0]

    def answer_otp(self, checkout_id: str, otp: str) -> dict[str, Any]:
        """Submit the OTP; the merchant's view of the checkout as the submission wrote it."""
        moved, shown = self._submit_otp(checkout_id, otp)
        return json.loads(shown) if shown else self.view(moved)

    def _submit_otp(self, checkout_id: str, otp: str) -> tuple[Checkout, str | None]:
        c = self.get(checkout_id)
        if State(c.state) is not State.AWAITING_OTP:
            status = saga.public_status(State(c.state))
            raise CheckoutError(409, "INVALID_STATE", f"an OTP cannot be submitted while {status}", status=status)
        try:  # under this submission's own ref: a concurrent one can neither overwrite nor delete it
            ref = self.vault.put_otp(c.id, otp, self.settings.otp_ttl_seconds)
        except Exception as exc:
            log.error("checkout.vault_unavailable", saga_id=c.id, error=type(exc).__name__)
            raise CheckoutError(503, "UNAVAILABLE", "the OTP store (Redis) is unavailable; nothing was changed",
                                unavailable="redis") from None
        # the move this submission wins carries its ref: the submit step reads exactly this OTP
        moved, shown = self.engine.apply_shown(c.id, Fact.OTP_SUBMITTED, Source.MERCHANT, "OTP submitted",
                                               fields={"error_code": None, "error_message": None, "otp_ref": ref})
        if moved is None:
            self.vault.drop_otp(c.id, ref)  # only this submission's own entry
            now = self.get(checkout_id)
            status = saga.public_status(State(now.state))
            if State(now.state) is State.VERIFYING_OTP:
                log.info("checkout.otp_lost_race", saga_id=c.id)
                raise CheckoutError(409, "INVALID_STATE", "another OTP submission for this checkout was accepted "
                                    "first; this OTP was not used", status=status)
            raise CheckoutError(409, "INVALID_STATE", f"the checkout moved on ({status}); the OTP was not used",
                                status=status)
        return moved, shown

    def resend_otp(self, checkout_id: str) -> Checkout:
        c = self.get(checkout_id)
        if State(c.state) is not State.AWAITING_OTP:
            raise CheckoutError(409, "INVALID_STATE", f"no OTP to resend while {saga.public_status(State(c.state))}")
        if c.otp_resend_at and c.otp_resend_at > self.clock():
            wait = int((c.otp_resend_at - self.clock()).total_seconds() + 0.999)
            raise CheckoutError(409, "RESEND_TOO_EARLY", f"the OTP can be resent in {wait} seconds",
                                retry_after=wait)
        self.engine.send(Step.RESEND_OTP, c.id)
        return c

    def cancel(self, checkout_id: str) -> Checkout:
        c = self.get(checkout_id)
        state = State(c.state)
        if state in (State.CANCELLING, State.CANCELLED, State.WATCHING):
            return c
        if state not in saga.CANCELLABLE:
            raise CheckoutError(409, "INVALID_STATE", f"a {saga.public_status(state)} checkout cannot be cancelled",
                                status=saga.public_status(state))
        moved = self.engine.apply(c.id, Fact.CANCEL_REQUESTED, Source.MERCHANT, "cancel requested by the merchant",
                                  fields={"cancel_reason": "MERCHANT"})
        if moved is None:
            return self.cancel(checkout_id)
        return moved

    # --- pre-auth delivery and refunds --------------------------------------------------

    def deliver(self, checkout_id: str, capture_amount: int | None) -> Checkout:
        """Record the delivery of a pre-auth checkout and start its capture (once)."""
        c = self.get(checkout_id)
        state = State(c.state)
        if not c.pre_auth:
            raise CheckoutError(409, "NOT_PRE_AUTH", "only a pre_auth checkout is captured on delivery")
        if c.delivered_at is not None and state in (State.CAPTURING, State.COMPLETED):
            if capture_amount is not None and capture_amount != c.capture_amount:
                raise CheckoutError(409, "DELIVERY_CONFLICT", "this checkout was delivered with another amount",
                                    capture_amount={"value": c.capture_amount, "currency": c.currency})
            return c
        if state is not State.AUTHORIZED:
            status = saga.public_status(state)
            raise CheckoutError(409, "INVALID_STATE", f"a {status} checkout cannot be delivered", status=status)
        amount = c.authorized_amount if capture_amount is None else capture_amount
        if not 0 < amount <= c.authorized_amount:
            raise CheckoutError(422, "CAPTURE_EXCEEDS_AUTHORIZED",
                                f"capture_amount must be between 1 and the authorized {c.authorized_amount}",
                                authorized_amount={"value": c.authorized_amount, "currency": c.currency})
        moved = self.engine.apply(
            c.id, Fact.DELIVERED, Source.MERCHANT,
            "delivered: capture " + ("in full" if amount == c.authorized_amount else f"of {amount} (partial)"),
            fields={"delivered_at": self.clock(), "capture_amount": amount})
        if moved is None:
            return self.deliver(checkout_id, capture_amount)
        return moved


    def refund(self, checkout_id: str, amount: int | None, reference: str | None) -> tuple[Any, bool]:
        self.get(checkout_id)
        return request_refund(self.deps, checkout_id, amount, reference)

    def resolve_refund(self, refund_id: str, who: str) -> Any:
        """An operator's resolve of a refund that NEEDS_ATTENTION, decided by Plural's refund order."""
        if self.plural is None:
            raise RefundRefused(503, "PLURAL_UNAVAILABLE", "no Plural client in this process; nothing was changed")
        return resolve_refund(self.deps, refund_id, who)

    def refunds(self, checkout_id: str) -> list[Any]:
        return refunds_of(self.deps, checkout_id)


def _emi_choice(req: CheckoutIn) -> dict[str, Any] | None:
    if req.emi is None:
        return None
    return {"issuer_id": req.emi.issuer_id, "tenure_id": req.emi.tenure_id,
            "expected_monthly_emi": req.emi.expected_monthly_emi.value if req.emi.expected_monthly_emi else None,
            "product_details": [{"product_code": p.product_code, "product_amount": p.product_amount.value}
                                for p in req.product_details or []]}

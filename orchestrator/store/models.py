"""SQLModel tables: the checkout saga, its write-ahead step attempts, its transition history.

Card data is never stored: only the last four digits and the network. Money columns are integer
minor units with the currency beside them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlalchemy.orm import configure_mappers
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlmodel import Field, SQLModel

from orchestrator.domain.ids import new_id


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as UTC-aware (SQLite hands naive ones back)."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


_mappers_ready = False


def detached(model: Any, row: Any) -> Any:
    """An instance of the table ``model`` from a Core row (or mapping), belonging to no session:
    read and changed like one the ORM loaded, without the ORM's per-row loading work (the hot
    paths read with prebuilt Core statements)."""
    global _mappers_ready
    if not _mappers_ready:
        configure_mappers()
        _mappers_ready = True
    instance = model.model_construct(**(row._mapping if hasattr(row, "_mapping") else row))
    manager_of_class(model).setup_instance(instance)
    return instance


def new_checkout_id() -> str:
    return new_id("chk_")


def money(nullable: bool = False, default: int | None = None) -> Any:
    """A money column: integer minor units, 64-bit everywhere (int4 overflows at 21 lakh rupees)."""
    if nullable:
        return Field(default=default, sa_column=Column(BigInteger, nullable=True))
    return Field(default=default if default is not None else ..., sa_column=Column(BigInteger, nullable=False))


class Checkout(SQLModel, table=True):
    __tablename__ = "checkout"
    __table_args__ = (
        UniqueConstraint("merchant_order_reference", name="uq_checkout_merchant_order_reference"),
        Index("ix_checkout_due", "next_due_at"),
        Index("ix_checkout_state", "state"),
        Index("ix_checkout_plural_order_id", "plural_order_id"),
    )

    id: str = Field(default_factory=new_checkout_id, primary_key=True, max_length=40)
    state: str = Field(max_length=32)
    version: int = 0

    merchant_order_reference: str = Field(max_length=50)
    merchant_payment_reference: str = Field(max_length=50)
    merchant_capture_reference: str = Field(max_length=50)

    amount_value: int = money()
    currency: str = Field(max_length=3)
    pre_auth: bool = False
    payment_method: str = Field(default="CARD", max_length=16)
    customer: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))
    callback_url: Optional[str] = None
    failure_callback_url: Optional[str] = None
    #: the customer's browser (Plural's create-payment ``device_info``), when the merchant gave it
    device_info: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))

    # EMI: the customer's choice (issuer_id, tenure_id, expected_monthly_emi, product_details), the
    # offer exactly as Plural discovered it, and what the card pays (the loan after instant discounts)
    emi_choice: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))
    offer: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(JSON))
    payment_amount: Optional[int] = money(nullable=True)
    cart_coupon_discount: Optional[int] = money(nullable=True)

    card_last4: Optional[str] = Field(default=None, max_length=4)
    #: the card, encrypted with the vault's key, for a checkout accepted while Redis was away; the
    #: first step moves it into the vault and clears it (never in clear)
    sealed_card: Optional[str] = Field(default=None, repr=False)
    card_network: Optional[str] = Field(default=None, max_length=20)
    card_issuer: Optional[str] = Field(default=None, max_length=64)
    native_otp: Optional[bool] = None

    plural_order_id: Optional[str] = Field(default=None, max_length=64)
    plural_payment_id: Optional[str] = Field(default=None, max_length=80)
    challenge_url: Optional[str] = None
    plural_status: Optional[str] = Field(default=None, max_length=32)

    otp_resend_at: Optional[dt.datetime] = None
    otp_attempts_left: Optional[int] = None
    # the vault entry of the OTP submission that won the move to VERIFYING_OTP (``Vault.put_otp``)
    otp_ref: Optional[str] = Field(default=None, max_length=32)

    authorized_amount: int = money(default=0)
    captured_amount: int = money(default=0)
    refunded_amount: int = money(default=0)

    deadline_at: Optional[dt.datetime] = None
    next_due_at: Optional[dt.datetime] = None
    polls: int = 0
    step_failures: int = 0

    error_code: Optional[str] = Field(default=None, max_length=64)
    error_message: Optional[str] = None
    finished_late: bool = False

    authorized_at: Optional[dt.datetime] = None
    capture_deadline_at: Optional[dt.datetime] = None
    delivered_at: Optional[dt.datetime] = None
    capture_amount: Optional[int] = money(nullable=True)
    cancel_reason: Optional[str] = Field(default=None, max_length=32)

    # the run that owns the checkout now: every write of that run is fenced by its token
    claim_token: Optional[str] = Field(default=None, max_length=40)
    claim_until: Optional[dt.datetime] = None
    # NEEDS_ATTENTION: where it got stuck and why; WATCHING: until when Plural's side is watched
    attention_from: Optional[str] = Field(default=None, max_length=32)
    attention_reason: Optional[str] = None
    watch_until: Optional[dt.datetime] = None
    # a payment that completed after the checkout ended for the merchant, and how it was undone
    late_undo: Optional[str] = Field(default=None, max_length=16)

    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class StepAttempt(SQLModel, table=True):
    """Written before every gateway call (``in_flight``), finished after it."""

    __tablename__ = "step_attempt"
    __table_args__ = (Index("ix_step_attempt_checkout_step", "checkout_id", "step"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    checkout_id: str = Field(foreign_key="checkout.id", max_length=40)
    step: str = Field(max_length=32)
    reference: Optional[str] = Field(default=None, max_length=80)
    outcome: str = Field(default="in_flight", max_length=16)  # in_flight, succeeded, failed, unknown
    detail: Optional[str] = None
    task_id: Optional[str] = Field(default=None, max_length=64)
    started_at: dt.datetime = Field(default_factory=utcnow)
    finished_at: Optional[dt.datetime] = None


class Transition(SQLModel, table=True):
    """Append-only history of every state change."""

    __tablename__ = "transition"
    __table_args__ = (Index("ix_transition_checkout", "checkout_id", "id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    checkout_id: str = Field(foreign_key="checkout.id", max_length=40)
    from_state: Optional[str] = Field(default=None, max_length=32)
    to_state: str = Field(max_length=32)
    fact: Optional[str] = Field(default=None, max_length=32)
    source: Optional[str] = Field(default=None, max_length=16)
    reason: str = Field(max_length=200)
    at: dt.datetime = Field(default_factory=utcnow)


class WebhookEvent(SQLModel, table=True):
    """Every verified webhook as it arrived, unique on Plural's ``webhook-id``."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        UniqueConstraint("webhook_id", name="uq_webhook_event_webhook_id"),
        Index("ix_webhook_event_status", "status", "id"),
        Index("ix_webhook_event_order", "order_id"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    webhook_id: str = Field(max_length=128)
    event_type: str = Field(max_length=64)
    order_id: Optional[str] = Field(default=None, max_length=64)
    merchant_order_reference: Optional[str] = Field(default=None, max_length=64)
    order_status: Optional[str] = Field(default=None, max_length=32)
    body: str
    # pending → processing → applied | ignored | deferred (order not recorded yet) → applied
    status: str = Field(default="pending", max_length=16)
    claim: Optional[str] = Field(default=None, max_length=40)
    note: Optional[str] = None
    attempts: int = 0
    received_at: dt.datetime = Field(default_factory=utcnow)
    claimed_at: Optional[dt.datetime] = None
    #: the claim lapses then, unless its processor renews it (a processor that died stops)
    claim_until: Optional[dt.datetime] = None
    processed_at: Optional[dt.datetime] = None


class Refund(SQLModel, table=True):
    """A refund of a completed checkout, written ahead with its own idempotency reference."""

    __tablename__ = "refund"
    __table_args__ = (
        UniqueConstraint("merchant_refund_reference", name="uq_refund_reference"),
        Index("ix_refund_due", "next_due_at"),
        Index("ix_refund_checkout", "checkout_id"),
        Index("ix_refund_plural_order_id", "plural_refund_order_id"),
    )

    id: str = Field(default_factory=lambda: new_id("rfd_"), primary_key=True, max_length=40)
    checkout_id: str = Field(foreign_key="checkout.id", max_length=40)
    merchant_refund_reference: str = Field(max_length=50)
    amount_value: int = money()
    currency: str = Field(max_length=3)
    state: str = Field(default="REQUESTED", max_length=16)
    claim_token: Optional[str] = Field(default=None, max_length=40)
    claim_until: Optional[dt.datetime] = None
    # why the refund exists when the merchant did not ask for it (a payment that completed too late)
    origin: str = Field(default="MERCHANT", max_length=16)
    plural_refund_order_id: Optional[str] = Field(default=None, max_length=64)
    plural_status: Optional[str] = Field(default=None, max_length=32)
    next_due_at: Optional[dt.datetime] = None
    polls: int = 0
    failures: int = 0
    error_code: Optional[str] = Field(default=None, max_length=64)
    error_message: Optional[str] = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class IdempotencyKey(SQLModel, table=True):
    """A merchant POST's ``Idempotency-Key``: the first answer, replayed for the same key and body."""

    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_created", "created_at"),)

    key: str = Field(primary_key=True, max_length=255)
    scope: str = Field(primary_key=True, max_length=200)  # method and path
    request_hash: str = Field(max_length=64)
    status_code: Optional[int] = None  # None while the first request is still being answered
    response_body: Optional[str] = None
    created_at: dt.datetime = Field(default_factory=utcnow)


def _big_id() -> Any:
    """A 64-bit autoincrement key (SQLite's rowid is one already)."""
    return Field(default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
                                                autoincrement=True))


class MerchantEvent(SQLModel, table=True):
    """An event for the merchant's backend (the outbox): written in the transaction of the change
    it reports, delivered after. ``id`` is the durable cursor of ``GET /v1/events``; events of one
    checkout (``subject_id``; its refunds' too) are delivered in order."""

    __tablename__ = "merchant_event"
    __table_args__ = (
        UniqueConstraint("event_id", name="uq_merchant_event_event_id"),
        Index("ix_merchant_event_due", "status", "next_attempt_at"),
        Index("ix_merchant_event_subject", "subject_id", "id"),
    )

    id: Optional[int] = _big_id()
    event_id: str = Field(max_length=40)
    type: str = Field(max_length=40)
    subject_id: str = Field(max_length=40)
    refund_id: Optional[str] = Field(default=None, max_length=40)
    payload: str
    created_at: dt.datetime = Field(default_factory=utcnow)
    # pending → delivered, or failed once retries ran out (redeliver makes it pending again)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: Optional[dt.datetime] = None
    claim: Optional[str] = Field(default=None, max_length=40)
    claimed_at: Optional[dt.datetime] = None
    delivered_at: Optional[dt.datetime] = None
    task_sent_at: Optional[dt.datetime] = None
    last_error: Optional[str] = None


class MerchantEventAttempt(SQLModel, table=True):
    """One attempt to deliver an event: when, how long, what the merchant's endpoint answered."""

    __tablename__ = "merchant_event_attempt"
    __table_args__ = (Index("ix_merchant_event_attempt_event", "event_id"),)

    id: Optional[int] = _big_id()
    event_id: int = Field(sa_column=Column(BigInteger, ForeignKey("merchant_event.id"), nullable=False))
    attempted_at: dt.datetime = Field(default_factory=utcnow)
    outcome: str = Field(max_length=16)  # delivered | failed
    status_code: Optional[int] = None
    latency_ms: int = 0
    error: Optional[str] = None

"""The checkout saga as a pure state machine: states, legal transitions, Plural status mapping, and
the step each state asks for. No Celery, HTTP or database code here.

::

    (AUTHORIZING: the customer is done, Plural has not reported yet; polled like the waiting states)

    NEW ──create_order──▶ ORDER_CREATED ──card_details──▶ CARD_CHECKED ──create_payment──┐
                                                                                          │
        ┌────────────── native OTP ◀── PAYMENT_CREATED ◀─────────────────────────────────┤
        ▼                                    │ generate refused / no native OTP           │ no native OTP
    AWAITING_OTP ◀──wrong OTP── VERIFYING_OTP │                                            ▼
        │  └──submit──────────▶  │            └────────────────────────────────▶ AWAITING_REDIRECT
        │                        ▼                                                     │
        └──────────── poll / submit / webhook: Plural AUTHORIZED or PROCESSED ◀────────┘
                       ├─ pre_auth: true  → AUTHORIZED ──delivery──▶ CAPTURING ──capture──▶ COMPLETED
                       │                        └─ no delivery by the capture deadline ─▶ CANCELLING ─▶ EXPIRED
                       └─ pre_auth: false → COMPLETED
    any waiting state ──deadline / merchant cancel──▶ CANCELLING ──cancel──▶ CANCELLED
    declines, OTP attempts exhausted, payment failed ──▶ FAILED

Every change is compare-and-set against ``allowed_from(target)``, so a late or duplicate signal
can never move a saga backwards.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    NEW = "NEW"
    ORDER_CREATED = "ORDER_CREATED"
    CARD_CHECKED = "CARD_CHECKED"
    PAYMENT_CREATED = "PAYMENT_CREATED"
    AWAITING_OTP = "AWAITING_OTP"
    VERIFYING_OTP = "VERIFYING_OTP"
    AWAITING_REDIRECT = "AWAITING_REDIRECT"
    AUTHORIZING = "AUTHORIZING"  # the customer is done; Plural has not reported the outcome yet
    AUTHORIZED = "AUTHORIZED"
    CAPTURING = "CAPTURING"  # delivered: the capture is on its way
    CANCELLING = "CANCELLING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"  # a pre-auth hold never delivered, released before it lapsed
    FAILED = "FAILED"


S = State
FINAL = frozenset({S.COMPLETED, S.CANCELLED, S.EXPIRED, S.FAILED})
#: states before authorization: the customer-action deadline cancels them
BEFORE_AUTHORIZATION = frozenset({S.NEW, S.ORDER_CREATED, S.CARD_CHECKED, S.PAYMENT_CREATED, S.AWAITING_OTP,
                                  S.VERIFYING_OTP, S.AWAITING_REDIRECT, S.AUTHORIZING})
#: states that wait on a Get Order poll (or a webhook) rather than on a step of ours
POLLING = frozenset({S.AWAITING_OTP, S.AWAITING_REDIRECT, S.AUTHORIZING})
#: states the merchant may cancel from
CANCELLABLE = BEFORE_AUTHORIZATION | {S.AUTHORIZED}

_SETTLED = {S.AUTHORIZED, S.COMPLETED, S.CANCELLING, S.CANCELLED, S.FAILED}
TRANSITIONS: dict[State, frozenset[State]] = {
    S.NEW: frozenset({S.ORDER_CREATED, S.CANCELLING, S.FAILED}),
    S.ORDER_CREATED: frozenset({S.CARD_CHECKED, S.CANCELLING, S.FAILED}),
    S.CARD_CHECKED: frozenset({S.PAYMENT_CREATED, S.AWAITING_REDIRECT, *_SETTLED}),
    S.PAYMENT_CREATED: frozenset({S.AWAITING_OTP, S.AWAITING_REDIRECT, *_SETTLED}),
    S.AWAITING_OTP: frozenset({S.VERIFYING_OTP, S.AWAITING_REDIRECT, *_SETTLED}),
    S.VERIFYING_OTP: frozenset({S.AWAITING_OTP, S.AUTHORIZING, *_SETTLED}),
    S.AWAITING_REDIRECT: frozenset({S.AUTHORIZING, *_SETTLED}),
    S.AUTHORIZING: frozenset(_SETTLED),
    S.AUTHORIZED: frozenset({S.CAPTURING, S.CANCELLING, S.CANCELLED, S.COMPLETED}),
    # a refused capture leaves the hold as it was
    S.CAPTURING: frozenset({S.COMPLETED, S.AUTHORIZED, S.CANCELLED}),
    # a cancel may find the payment already processed (reported, never hidden) or failed
    S.CANCELLING: frozenset({S.CANCELLED, S.EXPIRED, S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
    S.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def can_move(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def allowed_from(target: State) -> frozenset[State]:
    """Every state from which ``target`` may be reached: the compare-and-set guard."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def check(current: State, target: State) -> None:
    if not can_move(current, target):
        raise IllegalTransition(f"{current.value} cannot move to {target.value}")


# --- what the merchant sees -------------------------------------------------------------

PUBLIC_STATUS: dict[State, str] = {
    S.NEW: "PROCESSING",
    S.ORDER_CREATED: "PROCESSING",
    S.CARD_CHECKED: "PROCESSING",
    S.PAYMENT_CREATED: "PROCESSING",
    S.VERIFYING_OTP: "PROCESSING",
    S.AWAITING_OTP: "AWAITING_OTP",
    S.AWAITING_REDIRECT: "AWAITING_REDIRECT",
    S.AUTHORIZING: "PROCESSING",
    S.AUTHORIZED: "AUTHORIZED",
    S.CAPTURING: "CAPTURING",
    S.CANCELLING: "CANCELLING",
    S.COMPLETED: "COMPLETED",
    S.CANCELLED: "CANCELLED",
    S.EXPIRED: "EXPIRED",
    S.FAILED: "FAILED",
}


def public_status(state: State) -> str:
    return PUBLIC_STATUS[state]


# --- the next step ----------------------------------------------------------------------

class Step(str, Enum):
    CREATE_ORDER = "create_order"
    CARD_DETAILS = "card_details"
    CREATE_PAYMENT = "create_payment"
    GENERATE_OTP = "generate_otp"
    SUBMIT_OTP = "submit_otp"
    RESEND_OTP = "resend_otp"
    POLL_ORDER = "poll_order"
    CANCEL_ORDER = "cancel_order"
    CAPTURE_ORDER = "capture_order"
    EXPIRE_HOLD = "expire_hold"
    REFUND = "refund"  # takes a refund id, not a checkout id


NEXT_STEP: dict[State, Step] = {
    S.NEW: Step.CREATE_ORDER,
    S.ORDER_CREATED: Step.CARD_DETAILS,
    S.CARD_CHECKED: Step.CREATE_PAYMENT,
    S.PAYMENT_CREATED: Step.GENERATE_OTP,
    S.VERIFYING_OTP: Step.SUBMIT_OTP,
    S.AWAITING_OTP: Step.POLL_ORDER,
    S.AWAITING_REDIRECT: Step.POLL_ORDER,
    S.AUTHORIZING: Step.POLL_ORDER,
    S.AUTHORIZED: Step.EXPIRE_HOLD,  # only once its capture deadline is due
    S.CAPTURING: Step.CAPTURE_ORDER,
    S.CANCELLING: Step.CANCEL_ORDER,
}

#: the states a step may run in (a step found in any other state does nothing)
STEP_STATES: dict[Step, frozenset[State]] = {
    Step.CREATE_ORDER: frozenset({S.NEW}),
    Step.CARD_DETAILS: frozenset({S.ORDER_CREATED}),
    Step.CREATE_PAYMENT: frozenset({S.CARD_CHECKED}),
    Step.GENERATE_OTP: frozenset({S.PAYMENT_CREATED}),
    Step.SUBMIT_OTP: frozenset({S.VERIFYING_OTP}),
    Step.RESEND_OTP: frozenset({S.AWAITING_OTP}),
    Step.POLL_ORDER: frozenset({S.AWAITING_OTP, S.AWAITING_REDIRECT, S.AUTHORIZING}),
    Step.CANCEL_ORDER: frozenset({S.CANCELLING}),
    Step.CAPTURE_ORDER: frozenset({S.CAPTURING}),
    Step.EXPIRE_HOLD: frozenset({S.AUTHORIZED}),
}


def next_step(state: State) -> Step | None:
    return NEXT_STEP.get(state)


# --- Plural's view of an order ----------------------------------------------------------

class GatewayView(str, Enum):
    PENDING = "PENDING"          # nothing decided yet (CREATED, PENDING)
    AUTHORIZED = "AUTHORIZED"    # held, capture or cancel to follow
    PROCESSED = "PROCESSED"      # money taken (or later refunded)
    PAYMENT_FAILED = "PAYMENT_FAILED"  # this attempt failed (order ATTEMPTED: a retry is possible)
    FAILED = "FAILED"            # the order failed for good
    CANCELLED = "CANCELLED"


_ORDER_VIEW = {
    "CREATED": GatewayView.PENDING,
    "PENDING": GatewayView.PENDING,
    "AUTHORIZED": GatewayView.AUTHORIZED,
    "PROCESSED": GatewayView.PROCESSED,
    "PARTIALLY_CAPTURED": GatewayView.PROCESSED,
    "PARTIALLY_REFUNDED": GatewayView.PROCESSED,
    "FULLY_REFUNDED": GatewayView.PROCESSED,
    "ATTEMPTED": GatewayView.PAYMENT_FAILED,
    "FAILED": GatewayView.FAILED,
    "CANCELLED": GatewayView.CANCELLED,
}


def gateway_view(order_status: str, payment_status: str | None = None) -> GatewayView:
    """Plural's order status, read together with our payment's status.

    A payment that failed while the order still says PENDING counts as failed; an order status
    this code does not know is treated as undecided (poll again), never as success.
    """
    view = _ORDER_VIEW.get((order_status or "").upper(), GatewayView.PENDING)
    if view is GatewayView.PENDING and (payment_status or "").upper() == "FAILED":
        return GatewayView.PAYMENT_FAILED
    return view


def settle_target(view: GatewayView, pre_auth: bool) -> State | None:
    """The saga state Plural's view settles a waiting checkout in, or None to keep waiting."""
    if view is GatewayView.PROCESSED:
        return S.COMPLETED
    if view is GatewayView.AUTHORIZED:
        # a non-pre-auth order is captured by Plural right after authorization: wait for PROCESSED
        return S.AUTHORIZED if pre_auth else None
    if view in (GatewayView.PAYMENT_FAILED, GatewayView.FAILED):
        return S.FAILED
    if view is GatewayView.CANCELLED:
        return S.CANCELLED
    return None


def poll_delay(schedule: tuple[float, ...], polls_done: int) -> float:
    """Seconds until the next Get Order: the schedule's entry, its last entry once used up."""
    if not schedule:
        raise ValueError("empty poll schedule")
    return schedule[min(polls_done, len(schedule) - 1)]


# --- refunds ----------------------------------------------------------------------------

class RefundState(str, Enum):
    REQUESTED = "REQUESTED"  # written ahead; not yet accepted by Plural
    PENDING = "PENDING"      # Plural has the refund order, not settled yet
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"


REFUND_FINAL = frozenset({RefundState.PROCESSED, RefundState.FAILED})
REFUND_TRANSITIONS: dict[RefundState, frozenset[RefundState]] = {
    RefundState.REQUESTED: frozenset({RefundState.PENDING, RefundState.PROCESSED, RefundState.FAILED}),
    RefundState.PENDING: frozenset({RefundState.PROCESSED, RefundState.FAILED}),
    RefundState.PROCESSED: frozenset(),
    RefundState.FAILED: frozenset(),
}


def refund_state_of(plural_status: str) -> RefundState:
    """Plural's refund statuses: CREATED, PENDING, PROCESSED, FAILED."""
    status = (plural_status or "").upper()
    if status == "PROCESSED":
        return RefundState.PROCESSED
    if status == "FAILED":
        return RefundState.FAILED
    return RefundState.PENDING


def refundable(captured: int, refunds_not_failed: int) -> int:
    """What may still be refunded: captured minus every refund that has not failed."""
    return max(captured - refunds_not_failed, 0)

"""The checkout saga as a pure state machine: states, legal transitions, Plural status mapping, and
the step each state asks for. No Celery, HTTP or database code here.

::

    (AUTHORIZING: the customer is done, Plural has not reported yet; polled like the waiting states)

    EMI only: QUOTING ──check_offer: discover, choose, validate──▶ NEW    (not eligible ──▶ FAILED)
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
    CANCELLING ──Plural refuses while a payment is open──▶ WATCHING (public CANCELLED) ──▶ CANCELLED
    any active state ──retry budget spent──▶ NEEDS_ATTENTION ──operator retry / Plural final──▶ …
    any active state ──Plural refused our credentials too long──▶ NEEDS_ATTENTION ──credentials work──▶ back
    any active state ──Plural's answer is not about our order as we made it──▶ NEEDS_ATTENTION

Every input is a ``Fact`` from a ``Source``; ``decide`` is the one rule that maps (state, fact,
source) to a move, from the ``MOVES`` table and the ``SOURCES`` table (which source may state
which fact). The legal-transition table ``TRANSITIONS`` is derived from ``MOVES``. A late,
stale or duplicated fact finds no entry and moves nothing.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum


class State(str, Enum):
    QUOTING = "QUOTING"  # EMI: the offer is discovered and validated with Plural before any order
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
    #: cancelled for the merchant (public status CANCELLED), but Plural refused the cancel while a
    #: payment was still open: watched until Plural's side is final, and undone if it pays after all
    WATCHING = "WATCHING"
    #: retries or the watch ran out: visible, reconciled slowly against Get Order, for an operator
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


S = State
FINAL = frozenset({S.COMPLETED, S.CANCELLED, S.EXPIRED, S.FAILED})
#: states before authorization: the customer-action deadline cancels them
BEFORE_AUTHORIZATION = frozenset({S.QUOTING, S.NEW, S.ORDER_CREATED, S.CARD_CHECKED, S.PAYMENT_CREATED, S.AWAITING_OTP,
                                  S.VERIFYING_OTP, S.AWAITING_REDIRECT, S.AUTHORIZING})
#: states in which our payment may exist at Plural and its outcome is awaited
PAYING = frozenset({S.CARD_CHECKED, S.PAYMENT_CREATED, S.AWAITING_OTP, S.VERIFYING_OTP, S.AWAITING_REDIRECT,
                    S.AUTHORIZING})
#: states that wait on a Get Order poll (or a webhook) rather than on a step of ours
POLLING = frozenset({S.AWAITING_OTP, S.AWAITING_REDIRECT, S.AUTHORIZING})
#: states the merchant may cancel from
CANCELLABLE = BEFORE_AUTHORIZATION | {S.AUTHORIZED}
#: states an operator may send a checkout back to from NEEDS_ATTENTION
RESUMABLE = frozenset(set(State) - FINAL - {S.NEEDS_ATTENTION})


class Source(str, Enum):
    """Where a fact comes from. The return URL is a hint to poll, never a fact."""

    STEP = "step"          # the answer to our own call (or our own vault)
    WEBHOOK = "webhook"    # Plural's signed snapshot of the order
    POLL = "poll"          # Get Order, asked by us
    MERCHANT = "merchant"  # the merchant's API
    TIMER = "timer"        # a due time passed, or a retry budget ran out
    OPERATOR = "operator"  # a person, through the CLI


class Fact(str, Enum):
    # the answers to our own calls
    OFFER_ELIGIBLE = "offer_eligible"        # EMI: Plural validated the offer chosen from its discovery
    OFFER_REFUSED = "offer_refused"          # EMI: not offered, changed, or not eligible: no order is made
    ORDER_CREATED = "order_created"
    ORDER_REFUSED = "order_refused"
    CARD_CHECKED = "card_checked"
    CARD_REFUSED = "card_refused"
    CARD_GONE = "card_gone"                  # the card data expired in the vault before the payment
    PAYMENT_NATIVE_OTP = "payment_native_otp"
    PAYMENT_REDIRECT = "payment_redirect"
    PAYMENT_REFUSED = "payment_refused"
    OTP_SENT = "otp_sent"
    OTP_UNAVAILABLE = "otp_unavailable"      # generate refused: the bank page instead
    OTP_WRONG = "otp_wrong"
    OTP_NOT_USED = "otp_not_used"            # the OTP lapsed in the vault, or its outcome is unknown: ask again
    OTP_ACCEPTED = "otp_accepted"
    CAPTURE_REFUSED = "capture_refused"
    CANCEL_CONFIRMED = "cancel_confirmed"
    CANCEL_REFUSED = "cancel_refused"        # Plural refused; the payment may still complete: watched
    NOTHING_TO_CANCEL = "nothing_to_cancel"  # no order, or no payment of ours: no money can move
    # Plural's view of the order (a webhook's snapshot, a poll, or the order in our call's answer)
    PLURAL_AUTHORIZED = "plural_authorized"
    PLURAL_PROCESSED = "plural_processed"
    PLURAL_PAYMENT_FAILED = "plural_payment_failed"
    PLURAL_FAILED = "plural_failed"
    PLURAL_CANCELLED = "plural_cancelled"
    #: Plural's answer disagrees with the checkout (amount, currency, pre_auth, type, reference, or
    #: an order bound to another checkout): never adopted, never followed; a person must look
    GATEWAY_MISMATCH = "gateway_mismatch"
    # the merchant
    OTP_SUBMITTED = "otp_submitted"
    CANCEL_REQUESTED = "cancel_requested"
    DELIVERED = "delivered"
    # due times and budgets
    DEADLINE_PASSED = "deadline_passed"
    HOLD_DUE = "hold_due"
    GAVE_UP = "gave_up"                      # retries or the watch ran out: a person must look
    #: Plural accepts our client credentials again: a checkout that NEEDS_ATTENTION only because
    #: it waited too long for them goes back where it was (the step says which checkouts those are)
    CREDENTIALS_ACCEPTED = "credentials_accepted"
    # operators
    OPERATOR_RETRY = "operator_retry"
    OPERATOR_RESOLVE = "operator_resolve"


F = Fact
_STEP = frozenset({Source.STEP})
_PLURAL = frozenset({Source.STEP, Source.WEBHOOK, Source.POLL})
#: which sources may state which fact: a fact from any other source is ignored
SOURCES: dict[Fact, frozenset[Source]] = {
    **{f: _STEP for f in (F.OFFER_ELIGIBLE, F.OFFER_REFUSED, F.ORDER_CREATED, F.ORDER_REFUSED, F.CARD_CHECKED, F.CARD_REFUSED, F.CARD_GONE,
                          F.PAYMENT_NATIVE_OTP, F.PAYMENT_REDIRECT, F.PAYMENT_REFUSED, F.OTP_SENT,
                          F.OTP_UNAVAILABLE, F.OTP_WRONG, F.OTP_NOT_USED, F.OTP_ACCEPTED, F.CAPTURE_REFUSED,
                          F.CANCEL_CONFIRMED, F.CANCEL_REFUSED, F.NOTHING_TO_CANCEL)},
    **{f: _PLURAL for f in (F.PLURAL_AUTHORIZED, F.PLURAL_PROCESSED, F.PLURAL_PAYMENT_FAILED, F.PLURAL_FAILED,
                            F.PLURAL_CANCELLED, F.GATEWAY_MISMATCH)},
    F.OTP_SUBMITTED: frozenset({Source.MERCHANT}),
    F.CANCEL_REQUESTED: frozenset({Source.MERCHANT}),
    F.DELIVERED: frozenset({Source.MERCHANT}),
    F.DEADLINE_PASSED: frozenset({Source.TIMER}),
    F.HOLD_DUE: frozenset({Source.TIMER}),
    F.GAVE_UP: frozenset({Source.TIMER}),
    F.CREDENTIALS_ACCEPTED: frozenset({Source.TIMER}),
    F.OPERATOR_RETRY: frozenset({Source.OPERATOR}),
    F.OPERATOR_RESOLVE: frozenset({Source.OPERATOR}),
}

#: placeholders in the table, resolved by ``decide`` from the checkout's own facts
HOLD_IF_PRE_AUTH = "hold if pre_auth"          # AUTHORIZED for a pre-auth order; a normal one waits for PROCESSED
CANCEL_END = "cancelled or expired"             # EXPIRED when we released an undelivered hold, else CANCELLED
RELEASE_IF_PRE_AUTH = "release if pre_auth"     # a hold that came after we gave up: release it


def _table() -> dict[tuple[State, Fact], State | str]:
    t: dict[tuple[State, Fact], State | str] = {
        (S.QUOTING, F.OFFER_ELIGIBLE): S.NEW,
        (S.QUOTING, F.OFFER_REFUSED): S.FAILED,
        (S.QUOTING, F.CARD_GONE): S.FAILED,
        (S.NEW, F.ORDER_CREATED): S.ORDER_CREATED,
        (S.NEW, F.ORDER_REFUSED): S.FAILED,
        (S.ORDER_CREATED, F.CARD_CHECKED): S.CARD_CHECKED,
        (S.ORDER_CREATED, F.CARD_REFUSED): S.CANCELLING,
        (S.ORDER_CREATED, F.CARD_GONE): S.CANCELLING,
        (S.CARD_CHECKED, F.CARD_GONE): S.CANCELLING,
        (S.CARD_CHECKED, F.PAYMENT_NATIVE_OTP): S.PAYMENT_CREATED,
        (S.CARD_CHECKED, F.PAYMENT_REDIRECT): S.AWAITING_REDIRECT,
        (S.CARD_CHECKED, F.PAYMENT_REFUSED): S.FAILED,
        (S.PAYMENT_CREATED, F.OTP_SENT): S.AWAITING_OTP,
        (S.PAYMENT_CREATED, F.OTP_UNAVAILABLE): S.AWAITING_REDIRECT,
        (S.AWAITING_OTP, F.OTP_SUBMITTED): S.VERIFYING_OTP,
        (S.VERIFYING_OTP, F.OTP_WRONG): S.AWAITING_OTP,
        (S.VERIFYING_OTP, F.OTP_NOT_USED): S.AWAITING_OTP,
        (S.VERIFYING_OTP, F.OTP_ACCEPTED): S.AUTHORIZING,
        (S.AUTHORIZED, F.DELIVERED): S.CAPTURING,
        (S.AUTHORIZED, F.HOLD_DUE): S.CANCELLING,
        # only the answer to our own capture call may move a capture back
        (S.CAPTURING, F.CAPTURE_REFUSED): S.AUTHORIZED,
        (S.CANCELLING, F.CANCEL_CONFIRMED): CANCEL_END,
        (S.CANCELLING, F.NOTHING_TO_CANCEL): S.CANCELLED,
        (S.CANCELLING, F.CANCEL_REFUSED): S.WATCHING,
        # Plural's view: it only ever moves a checkout forward along Plural's own order lifecycle
        (S.AUTHORIZED, F.PLURAL_PROCESSED): S.COMPLETED,
        (S.AUTHORIZED, F.PLURAL_CANCELLED): S.CANCELLED,
        (S.CAPTURING, F.PLURAL_PROCESSED): S.COMPLETED,
        (S.CAPTURING, F.PLURAL_CANCELLED): S.CANCELLED,
        (S.CANCELLING, F.PLURAL_PROCESSED): S.COMPLETED,   # paid before the cancel: reported, never hidden
        (S.CANCELLING, F.PLURAL_CANCELLED): CANCEL_END,
        (S.CANCELLING, F.PLURAL_FAILED): S.CANCELLED,
        (S.CANCELLING, F.PLURAL_PAYMENT_FAILED): S.CANCELLED,
        # cancelled for the merchant, still watched until Plural's side is final
        (S.WATCHING, F.PLURAL_AUTHORIZED): RELEASE_IF_PRE_AUTH,
        (S.WATCHING, F.PLURAL_PROCESSED): S.CANCELLED,     # with the payment refunded automatically
        (S.WATCHING, F.PLURAL_FAILED): S.CANCELLED,
        (S.WATCHING, F.PLURAL_PAYMENT_FAILED): S.CANCELLED,
        (S.WATCHING, F.PLURAL_CANCELLED): S.CANCELLED,
        (S.WATCHING, F.GAVE_UP): S.NEEDS_ATTENTION,
    }
    for s in PAYING:
        t[(s, F.PLURAL_AUTHORIZED)] = HOLD_IF_PRE_AUTH
        t[(s, F.PLURAL_PROCESSED)] = S.COMPLETED
        t[(s, F.PLURAL_PAYMENT_FAILED)] = S.FAILED
        t[(s, F.PLURAL_FAILED)] = S.FAILED
        t[(s, F.PLURAL_CANCELLED)] = S.CANCELLED
    for s in BEFORE_AUTHORIZATION:
        t[(s, F.DEADLINE_PASSED)] = S.CANCELLING
    for s in CANCELLABLE:
        t[(s, F.CANCEL_REQUESTED)] = S.CANCELLING
    for s in RESUMABLE:
        t.setdefault((s, F.GAVE_UP), S.NEEDS_ATTENTION)
        t[(s, F.GATEWAY_MISMATCH)] = S.NEEDS_ATTENTION
    return t


#: (state, fact) → the state it moves to. Anything not in this table moves nothing.
MOVES = _table()
#: what an operator may declare a stuck checkout to have ended as
OPERATOR_OUTCOMES = frozenset({S.COMPLETED, S.CANCELLED, S.FAILED})
#: where an operator's resolve may move a stuck checkout: an outcome, or CANCELLING when a hold or
#: an order is open at Plural (the cancel step releases it); which one is ``operator_resolution``'s
OPERATOR_MOVES = OPERATOR_OUTCOMES | {S.CANCELLING}


def _concrete(target: State | str, pre_auth: bool, cancel_reason: str | None) -> State | None:
    if target == HOLD_IF_PRE_AUTH:
        return S.AUTHORIZED if pre_auth else None
    if target == RELEASE_IF_PRE_AUTH:
        return S.CANCELLING if pre_auth else None
    if target == CANCEL_END:
        return S.EXPIRED if cancel_reason == "HOLD_EXPIRED" else S.CANCELLED
    assert isinstance(target, State)
    return target


def decide(state: State, fact: Fact, source: Source, *, pre_auth: bool = False, cancel_reason: str | None = None,
           attention_from: State | None = None, wanted: State | None = None) -> State | None:
    """The one rule of the saga: where ``fact`` from ``source`` moves a checkout in ``state``, or None.

    A fact from a source that may not state it moves nothing. A checkout that NEEDS_ATTENTION
    still follows Plural to a final outcome (or to a hold) as the state it got stuck in would; an
    operator sends it back to that state, or declares its outcome.
    """
    if source not in SOURCES[fact]:
        return None
    if state is S.NEEDS_ATTENTION:
        if fact is F.GATEWAY_MISMATCH:  # already in front of a person: nothing to follow
            return None
        if fact is F.OPERATOR_RETRY or fact is F.CREDENTIALS_ACCEPTED:
            return attention_from if attention_from in RESUMABLE else None
        if fact is F.OPERATOR_RESOLVE:
            return wanted if wanted in OPERATOR_MOVES else None
        if source in _PLURAL and attention_from is not None and attention_from in RESUMABLE:
            target = decide(attention_from, fact, source, pre_auth=pre_auth, cancel_reason=cancel_reason)
            return target if target is not None and (target in FINAL or target is S.AUTHORIZED) else None
        return None
    target = MOVES.get((state, fact))
    if target is None:
        return None
    return _concrete(target, pre_auth, cancel_reason)


def _transitions() -> dict[State, frozenset[State]]:
    out: dict[State, set[State]] = {s: set() for s in State}
    for (state, _fact), target in MOVES.items():
        for pre_auth in (False, True):
            for reason in (None, "HOLD_EXPIRED"):
                concrete = _concrete(target, pre_auth, reason)
                if concrete is not None:
                    out[state].add(concrete)
    out[S.NEEDS_ATTENTION] |= set(RESUMABLE) | set(FINAL) | {S.AUTHORIZED}
    return {s: frozenset(t) for s, t in out.items()}


#: the legal-transition table, derived from MOVES: every (from, to) some fact can cause
TRANSITIONS: dict[State, frozenset[State]] = _transitions()


class IllegalTransition(ValueError):
    pass


def can_move(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def allowed_from(target: State) -> frozenset[State]:
    """Every state from which ``target`` may be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def check(current: State, target: State) -> None:
    if not can_move(current, target):
        raise IllegalTransition(f"{current.value} cannot move to {target.value}")


def may_cause(source: Source, current: State, target: State) -> bool:
    """Could a fact from ``source`` move ``current`` to ``target``? (the invariant tests check every move)"""
    for (state, fact), t in MOVES.items():
        if state is current and source in SOURCES[fact]:
            for pre_auth in (False, True):
                for reason in (None, "HOLD_EXPIRED"):
                    if _concrete(t, pre_auth, reason) is target:
                        return True
    if current is S.NEEDS_ATTENTION:
        if source is Source.TIMER:  # CREDENTIALS_ACCEPTED: back to where it waited
            return target in RESUMABLE
        return target in TRANSITIONS[current] and (source in _PLURAL or source is Source.OPERATOR)
    return False


# --- what the merchant sees -------------------------------------------------------------

PUBLIC_STATUS: dict[State, str] = {
    S.QUOTING: "PROCESSING",
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
    S.WATCHING: "CANCELLED",
    S.NEEDS_ATTENTION: "NEEDS_ATTENTION",
}


def public_status(state: State) -> str:
    return PUBLIC_STATUS[state]


def public_change(before: State, after: State) -> str | None:
    """The public status a move from ``before`` to ``after`` shows the merchant, or None when the
    merchant sees no change (the announcement and the outbox both follow this)."""
    status = PUBLIC_STATUS[after]
    return status if status != PUBLIC_STATUS[before] else None


# --- the next step ----------------------------------------------------------------------

class Step(str, Enum):
    CHECK_OFFER = "check_offer"
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
    S.QUOTING: Step.CHECK_OFFER,
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
    S.WATCHING: Step.POLL_ORDER,
    S.NEEDS_ATTENTION: Step.POLL_ORDER,
}

#: the states a step may run in (a step found in any other state does nothing)
STEP_STATES: dict[Step, frozenset[State]] = {
    Step.CHECK_OFFER: frozenset({S.QUOTING}),
    Step.CREATE_ORDER: frozenset({S.NEW}),
    Step.CARD_DETAILS: frozenset({S.ORDER_CREATED}),
    Step.CREATE_PAYMENT: frozenset({S.CARD_CHECKED}),
    Step.GENERATE_OTP: frozenset({S.PAYMENT_CREATED}),
    Step.SUBMIT_OTP: frozenset({S.VERIFYING_OTP}),
    Step.RESEND_OTP: frozenset({S.AWAITING_OTP}),
    Step.POLL_ORDER: frozenset({S.AWAITING_OTP, S.AWAITING_REDIRECT, S.AUTHORIZING, S.WATCHING,
                                S.NEEDS_ATTENTION}),
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


_VIEW_FACT = {
    GatewayView.AUTHORIZED: Fact.PLURAL_AUTHORIZED,
    GatewayView.PROCESSED: Fact.PLURAL_PROCESSED,
    GatewayView.PAYMENT_FAILED: Fact.PLURAL_PAYMENT_FAILED,
    GatewayView.FAILED: Fact.PLURAL_FAILED,
    GatewayView.CANCELLED: Fact.PLURAL_CANCELLED,
}


def fact_of(view: GatewayView) -> Fact | None:
    """The fact Plural's view of an order states, or None while nothing is decided."""
    return _VIEW_FACT.get(view)


#: (the operator's outcome, Plural's view of the order; None: Plural has no order) → where the
#: checkout goes. Missing: refused.
_OPERATOR_RESOLUTION: dict[tuple[State, GatewayView | None], State] = {
    # only Plural's own PROCESSED makes a checkout paid
    (S.COMPLETED, GatewayView.PROCESSED): S.COMPLETED,
    # nothing open at Plural: cancelled as declared
    (S.CANCELLED, None): S.CANCELLED,
    (S.CANCELLED, GatewayView.PAYMENT_FAILED): S.CANCELLED,
    (S.CANCELLED, GatewayView.FAILED): S.CANCELLED,
    (S.CANCELLED, GatewayView.CANCELLED): S.CANCELLED,
    # a hold or a pending order: the cancel step releases it (or watches a payment it cannot stop)
    (S.CANCELLED, GatewayView.PENDING): S.CANCELLING,
    (S.CANCELLED, GatewayView.AUTHORIZED): S.CANCELLING,
    # no money taken or held
    (S.FAILED, None): S.FAILED,
    (S.FAILED, GatewayView.PAYMENT_FAILED): S.FAILED,
    (S.FAILED, GatewayView.FAILED): S.FAILED,
    (S.FAILED, GatewayView.CANCELLED): S.FAILED,
}


def operator_resolution(wanted: State, view: GatewayView | None, payment_open: bool = False) -> State | None:
    """Where an operator's ``resolve`` as ``wanted`` takes a stuck checkout, given Plural's view of
    its order (None: Plural has no order for it), or None when Plural's view refuses it.

    The caller asks Plural first and lets the checkout follow Plural's own fact (a final view, or
    a hold) as any poll would; this rule is for what is left. COMPLETED only when Plural says
    PROCESSED; CANCELLED goes through CANCELLING while a hold or an order is open at Plural;
    FAILED only when Plural shows no money taken or held and no payment of ours still open
    (``payment_open``: a payment of ours exists on a PENDING order).
    """
    if wanted is S.FAILED and view is GatewayView.PENDING and not payment_open:
        return S.FAILED
    return _OPERATOR_RESOLUTION.get((wanted, view))


def capture_deadline(authorized_at: dt.datetime, hold_days: float, margin_seconds: float) -> dt.datetime:
    """When an undelivered hold is released: Plural's authorization time plus the hold, less a margin."""
    hold = dt.timedelta(days=hold_days) - dt.timedelta(seconds=margin_seconds)
    return authorized_at + max(hold, dt.timedelta(0))


def retry_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before the next try after ``failures`` failures: exponential from ``base``, capped."""
    return min(cap, base * 2 ** (failures - 1))


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
    #: stopped for an operator, its error saying why: Plural answered with an order that is not
    #: this refund (REFUND_MISMATCH), or the automatic refund of a late payment failed
    #: (LATE_REFUND_FAILED: the customer is still charged, the checkout may be refunded again)
    NEEDS_ATTENTION = "NEEDS_ATTENTION"


#: why a refund NEEDS_ATTENTION
REFUND_MISMATCH = "REFUND_MISMATCH"
LATE_REFUND_FAILED = "LATE_REFUND_FAILED"
#: the reference a refund is known by at Plural: ours, derived from the refund's id, never the
#: merchant's (Plural finds any order by its reference, checkouts' orders included)
PLURAL_REFUND_PREFIX = "orch-refund-"

REFUND_FINAL = frozenset({RefundState.PROCESSED, RefundState.FAILED})
REFUND_TRANSITIONS: dict[RefundState, frozenset[RefundState]] = {
    RefundState.REQUESTED: frozenset({RefundState.PENDING, RefundState.PROCESSED, RefundState.FAILED,
                                      RefundState.NEEDS_ATTENTION}),
    RefundState.PENDING: frozenset({RefundState.PROCESSED, RefundState.FAILED, RefundState.NEEDS_ATTENTION}),
    # closed when the checkout is refunded again (a failed late refund), or by an operator's
    # resolve-refund, from Plural's refund order
    RefundState.NEEDS_ATTENTION: frozenset({RefundState.PROCESSED, RefundState.FAILED}),
    RefundState.PROCESSED: frozenset(),
    RefundState.FAILED: frozenset(),
}


def plural_refund_reference(refund_id: str) -> str:
    """The ``merchant_order_reference`` a refund is sent to Plural with (44 characters)."""
    return PLURAL_REFUND_PREFIX + refund_id.removeprefix("rfd_")


def automatic_refund_reference(checkout_id: str, n: int) -> str:
    """The local name of a refund the merchant did not name (a late payment's, or one asked without a
    reference): ``chk_….rN``. The dot is outside the merchant's reference alphabet, so a merchant's
    reference can never take the name first and make our refund fail to be written."""
    return f"{checkout_id}.r{n}"


def refund_id_of(plural_reference: str | None) -> str | None:
    """The refund a reference of ours names, or None for any other reference."""
    if not plural_reference or not plural_reference.startswith(PLURAL_REFUND_PREFIX):
        return None
    return "rfd_" + plural_reference.removeprefix(PLURAL_REFUND_PREFIX)


def refund_mismatch(*, order_type: str | None, parent_order_id: str | None, amount: int | None,
                    currency: str | None, want_parent: str | None, want_amount: int, want_currency: str) -> str | None:
    """Why Plural's order is not the refund we expect (a REFUND of our checkout's order, of our
    amount), or None if it is."""
    wrong = []
    if (order_type or "").upper() != "REFUND":
        wrong.append(f"type {order_type or '-'}, not REFUND")
    if not want_parent or parent_order_id != want_parent:
        wrong.append(f"parent order {parent_order_id or '-'}, not {want_parent or '-'}")
    if amount != want_amount or (currency or "").upper() != want_currency.upper():
        wrong.append(f"amount {amount if amount is not None else '-'} {currency or '-'}, "
                     f"not {want_amount} {want_currency}")
    return "; ".join(wrong) or None


def refund_reserves(state: RefundState, error_code: str | None) -> bool:
    """Does a refund keep its amount from being refunded again? Not once it failed, nor a late
    refund that failed at Plural; a refund whose outcome is in doubt does."""
    if state is RefundState.FAILED:
        return False
    return not (state is RefundState.NEEDS_ATTENTION and error_code == LATE_REFUND_FAILED)


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

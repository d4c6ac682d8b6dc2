"""An operator's decisions on a checkout that NEEDS_ATTENTION: retry it, or resolve it against
Plural's own view of the order (``saga.operator_resolution``)."""

from __future__ import annotations

from typing import Any

from orchestrator.domain import saga
from orchestrator.domain.saga import Fact, Source, State
from orchestrator.merchant.errors import CheckoutError, ResolveRefused
from orchestrator.plural import errors as plural_errors
from orchestrator.saga import answers
from orchestrator.store.models import Checkout
from orchestrator.telemetry.logs import get_logger

log = get_logger("orchestrator.merchant.service")


class OperatorActions:
    """Mixed into ``CheckoutService``: uses its ``get``, ``engine``, ``deps`` and ``plural``."""

    get: Any
    engine: Any
    deps: Any
    plural: Any

    def operator(self, checkout_id: str, action: str, outcome: str | None = None, who: str = "operator") -> Checkout:
        """An operator's decision on a checkout that NEEDS_ATTENTION: ``retry`` sends it back to the
        state it got stuck in; ``resolve`` declares its outcome (COMPLETED, CANCELLED or FAILED).
        Recorded in the history with the operator's name."""
        c = self.get(checkout_id)
        if State(c.state) is not State.NEEDS_ATTENTION:
            raise CheckoutError(409, "INVALID_STATE", f"only a NEEDS_ATTENTION checkout can be {action}d; it is {c.state}")
        if action == "retry":
            moved = self.engine.apply(c.id, Fact.OPERATOR_RETRY, Source.OPERATOR, f"retried by {who}"[:200],
                                      fields={"error_code": None, "error_message": None})
        else:
            wanted = State(outcome) if outcome in {s.value for s in saga.OPERATOR_OUTCOMES} else None
            if wanted is None:
                raise CheckoutError(400, "INVALID_REQUEST", "resolve as COMPLETED, CANCELLED or FAILED")
            moved = self._resolve(c, wanted, who)
        if moved is None:
            raise CheckoutError(409, "INVALID_STATE", "the checkout moved on meanwhile")
        return moved

    def _plural_order(self, c: Checkout) -> Any:
        """Plural's order of a checkout, None when Plural has none; unreachable: refused, never guessed."""
        try:
            if self.plural is None:
                raise plural_errors.ConnectionFailed("no Plural client in this process")
            if c.plural_order_id:
                try:
                    return self.plural.get_order(c.plural_order_id)
                except plural_errors.NotFound:
                    raise ResolveRefused(f"not resolved: Plural does not know the order {c.plural_order_id} this "
                                         "checkout recorded; nothing was changed", plural_status=None,
                                         state=c.state) from None
            try:
                return self.plural.get_order_by_reference(c.merchant_order_reference)
            except plural_errors.NotFound:
                return None
        except plural_errors.PluralError as exc:
            log.warning("checkout.resolve.plural_unavailable", saga_id=c.id, error=type(exc).__name__)
            raise CheckoutError(503, "PLURAL_UNAVAILABLE",
                                f"cannot ask Plural for the order ({type(exc).__name__}); nothing was changed, "
                                "try again when Plural answers", unavailable="plural") from None

    def _resolve(self, c: Checkout, wanted: State, who: str) -> Checkout | None:
        """An operator's resolve, decided against Plural's Get Order: the checkout first follows
        Plural's own fact (a final view, or a hold), then goes where ``saga.operator_resolution``
        allows; a wish Plural's view contradicts is refused (``ResolveRefused``)."""
        order = self._plural_order(c)
        fact, fields = None, {}
        view, payment_open, status = None, False, "no order"
        if order is not None:
            problem = answers.mismatch(self.deps, c, order, found=c.plural_order_id is None)
            if problem:
                # Plural's order disagrees with the checkout: nothing is adopted, a person reconciles it
                raise self._refused(c, wanted, order.status, f"Plural's order disagrees with the checkout ({problem}); "
                                    "reconcile it at Plural, nothing was changed", c.state)
            fact, fields = answers.order_fact(self.deps, c, order)
            payment = answers.our_payment(c, order)
            view = saga.gateway_view(order.status, payment.status if payment else None)
            payment_open, status = payment is not None, order.status
        target = saga.operator_resolution(wanted, view, payment_open)
        if fact is not None and target is not State.CANCELLING:
            # what any poll would do: the checkout follows Plural's fact, whatever the operator wishes
            followed = self.engine.apply(c.id, fact, Source.POLL, f"asked for a resolve by {who}: Plural reports "
                                         f"{status}"[:200], fields=fields)
            if followed is not None:
                if State(followed.state) is wanted:
                    return followed
                raise self._refused(c, wanted, status, f"the checkout followed Plural to {followed.state}",
                                    followed.state)
        if target is None:
            raise self._refused(c, wanted, status, _why_not(wanted, view, payment_open), c.state)
        if target is State.CANCELLING:
            fields = {"plural_status": order.status if order is not None else None, "cancel_reason": "OPERATOR"}
        reason = f"resolved as {wanted.value} by {who}" + ("" if target is wanted else f": {target.value} at Plural "
                                                           f"(order {status})")
        return self.engine.apply(c.id, Fact.OPERATOR_RESOLVE, Source.OPERATOR, reason[:200], wanted=target,
                                 fields=fields)

    def _refused(self, c: Checkout, wanted: State, status: str, why: str, state: str) -> ResolveRefused:
        log.warning("checkout.resolve.refused", saga_id=c.id, wanted=wanted.value, plural_status=status, state=state)
        return ResolveRefused(f"not resolved as {wanted.value}: Plural reports {status}; {why}",
                              plural_status=None if status == "no order" else status, state=state)


def _why_not(wanted: State, view: saga.GatewayView | None, payment_open: bool) -> str:
    """Why Plural's view refuses an operator's outcome, with what to do instead."""
    if view is saga.GatewayView.PROCESSED:
        return "Plural took the money: only COMPLETED agrees (refund the checkout if it must be undone)"
    if wanted is State.COMPLETED:
        held = "it holds the money but nothing was captured" if view is saga.GatewayView.AUTHORIZED else \
            "no money was taken"
        return f"{held}; COMPLETED only when Plural says PROCESSED (retry the checkout, or resolve as CANCELLED)"
    if view is saga.GatewayView.AUTHORIZED:
        return "it holds the money; resolve as CANCELLED to release the hold, or retry the checkout"
    if payment_open:
        return "a payment of ours is still open there; resolve as CANCELLED to cancel it, or retry the checkout"
    return "its view does not allow this outcome"

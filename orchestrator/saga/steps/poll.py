"""Get Order while the checkout waits: for the customer, for a refused cancel, for a person."""

from __future__ import annotations

from orchestrator.domain.saga import Fact, Source, State, Step
from orchestrator.saga.answers import find_order_id, settle
from orchestrator.saga.deps import TRANSIENT, Deps, past_deadline, retry_later
from orchestrator.saga.engine import Run
from orchestrator.store.models import Checkout


def poll_order(d: Deps, run: Run, c: Checkout) -> None:
    """Get Order while waiting for the customer, while watching a refused cancel, and (slowly)
    while a checkout NEEDS_ATTENTION."""
    state = State(c.state)
    try:
        order_id = find_order_id(d, run, c)
        order = d.plural.get_order(order_id) if order_id else None
    except TRANSIENT as exc:
        if past_deadline(d, c):
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
    if past_deadline(d, c):
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

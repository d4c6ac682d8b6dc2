"""Write-ahead gateway calls: a step attempt is committed, with its deterministic reference, before the
call; its outcome is recorded after (``unknown`` when Plural may have acted), and an earlier
attempt whose outcome nobody knows is resolved by asking Plural before anything is sent again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from orchestrator.domain.saga import Step
from orchestrator.plural import errors
from orchestrator.saga.deps import TRANSIENT, Deps, text
from orchestrator.saga.engine import NOT_SENT, Run
from orchestrator.store.models import StepAttempt


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


def resolve(d: Deps, run: Run, step: Step, outcome: str, detail: str) -> None:
    unresolved = run.unresolved(step)
    d.repo.resolve_attempts([a.id for a in unresolved if a.id], outcome, text(detail))
    for attempt in unresolved:
        attempt.outcome = outcome

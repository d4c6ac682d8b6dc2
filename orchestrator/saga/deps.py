"""What every step shares: its collaborators (``Deps``, with the one engine built from them), the line
between a failure worth retrying and Plural's decision (``TRANSIENT``), masked text, and the
outcomes every step may hand the engine (its own fact, a retry later, a wait for our credentials,
the card gone, the customer's deadline passed).

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
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestrator.domain import saga
from orchestrator.domain.saga import Fact, Source, State, Step
from orchestrator.outbound.changes import Announce, silent
from orchestrator.plural import errors
from orchestrator.saga.engine import Engine, Run
from orchestrator.saga.leases import Leases
from orchestrator.store.models import Checkout, aware, utcnow
from orchestrator.store.repo import Repo
from orchestrator.store.vault import Vault
from orchestrator.telemetry.logs import get_logger, mask_text

log = get_logger("orchestrator.saga.steps")

#: the collaborators the engine is built from: a Deps keeps them for its engine's life
ENGINE_HOLDS = frozenset({"settings", "repo", "vault", "enqueue", "clock", "announce", "kick_events"})


@dataclass
class Deps:
    """A step's collaborators, built once per process by the bootstrap (``entrypoints.runtime``),
    with the one engine that writes a checkout's state. The engine holds the collaborators it is
    built from (``ENGINE_HOLDS``): those are not replaced afterwards (another set is another
    ``Deps``: ``dataclasses.replace``); the Plural client may be."""

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
    #: the engine of these collaborators, built once, here
    engine: Engine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.leases is None:
            self.leases = Leases.from_settings(self.repo, self.settings, self.clock)
        self.engine = Engine(self.settings, self.repo, self.vault, self.enqueue, self.clock, self.announce,
                             self.kick_events)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ENGINE_HOLDS and "engine" in self.__dict__:
            raise AttributeError(f"Deps.{name} is held by its engine: build another Deps (dataclasses.replace)")
        object.__setattr__(self, name, value)


#: failures worth trying again later; anything else from Plural is a decision
TRANSIENT = (errors.TransportError, errors.ServerError, errors.RateLimited, errors.ResponseFormatError,
             errors.AuthenticationFailed, errors.CredentialsRejected)


#: the checkout's error code (and the start of its attention reason) while Plural refuses our credentials
CREDENTIALS_REJECTED = "CREDENTIALS_REJECTED"


def due_in(d: Deps, seconds: float) -> dt.datetime:
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
    due = due_in(d, delay)
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
    due = due_in(d, d.settings.credentials_retry_seconds)
    if c.deadline_at and state in saga.BEFORE_AUTHORIZATION:
        due = min(due, max(c.deadline_at, now))
    if state is State.NEEDS_ATTENTION:  # there for its own reason: only its next look is due
        d.repo.note(c.id, states={state}, claim=run.claim, finish=run.finished,
                    next_due_at=d.engine.due_for(c, state, {}))
        return
    d.repo.note(c.id, states={state}, claim=run.claim, finish=run.finished, next_due_at=due,
                error_code=CREDENTIALS_REJECTED, error_message=message)
    log.warning("saga.step.credentials_rejected", step=step.value, waited=round(waited))


def card_gone(d: Deps, run: Run) -> None:
    state_fact(d, run, Fact.CARD_GONE, "card data expired before payment", error_code="CARD_DATA_EXPIRED",
               error_message="the card data was not used in time and has been discarded")


def past_deadline(d: Deps, c: Checkout) -> bool:
    return bool(c.deadline_at and d.clock() >= c.deadline_at and State(c.state) in saga.BEFORE_AUTHORIZATION)

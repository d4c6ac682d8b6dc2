"""The repository: every state change is compare-and-set, and leaves a row in the history."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from orchestrator.core.saga import FINAL, State, allowed_from
from orchestrator.db.models import Checkout, StepAttempt, Transition, utcnow


class Repo:
    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime] = utcnow):
        self.engine = engine
        self.clock = clock
        # SQLite writers begin IMMEDIATE; reads go through an engine that never takes the write lock
        self.read_engine = engine
        if engine.dialect.name == "sqlite":
            from orchestrator.db.engine import make_engine

            self.read_engine = make_engine(engine.url.render_as_string(hide_password=False), immediate=False)

    def session(self) -> Session:
        """A session for writing (and for reads that decide a write)."""
        return Session(self.engine, expire_on_commit=False)

    def read_session(self) -> Session:
        """A session for plain reads."""
        return Session(self.read_engine, expire_on_commit=False)

    # --- reads --------------------------------------------------------------------------

    def get(self, checkout_id: str) -> Checkout | None:
        with self.read_session() as s:
            return s.get(Checkout, checkout_id)

    def by_reference(self, merchant_order_reference: str) -> Checkout | None:
        with self.read_session() as s:
            return s.exec(select(Checkout).where(Checkout.merchant_order_reference == merchant_order_reference)).first()

    def by_plural_order(self, plural_order_id: str) -> Checkout | None:
        with self.read_session() as s:
            return s.exec(select(Checkout).where(Checkout.plural_order_id == plural_order_id)).first()

    def history(self, checkout_id: str) -> list[Transition]:
        with self.read_session() as s:
            rows = s.exec(select(Transition).where(Transition.checkout_id == checkout_id).order_by(col(Transition.id)))
            return list(rows)

    def attempts(self, checkout_id: str, step: str | None = None) -> list[StepAttempt]:
        with self.read_session() as s:
            q = select(StepAttempt).where(StepAttempt.checkout_id == checkout_id)
            if step is not None:
                q = q.where(StepAttempt.step == step)
            return list(s.exec(q.order_by(col(StepAttempt.id))))

    # --- writes -------------------------------------------------------------------------

    def insert(self, checkout: Checkout, reason: str = "checkout received") -> tuple[Checkout, bool]:
        """Insert a new checkout; on a duplicate merchant reference return the existing one."""
        try:
            with self.session() as s:
                s.add(checkout)
                s.flush()
                s.add(Transition(checkout_id=checkout.id, from_state=None, to_state=checkout.state, reason=reason,
                                 at=self.clock()))
                s.commit()
                return checkout, True
        except IntegrityError:
            existing = self.by_reference(checkout.merchant_order_reference)
            if existing is None:
                raise
            return existing, False

    def transition(self, checkout_id: str, target: State, reason: str, *,
                   allowed: Iterable[State] | None = None, **fields: Any) -> Checkout | None:
        """Move to ``target`` if the current state allows it; set ``fields`` in the same update.

        Returns the updated row, or None when the saga was not in an allowed state (a late or
        duplicate signal): nothing is written then.
        """
        guard = set(allowed if allowed is not None else allowed_from(target))
        now = self.clock()
        with self.session() as s:
            current = s.exec(select(Checkout).where(Checkout.id == checkout_id).with_for_update()).first()
            if current is None or State(current.state) not in guard:
                s.rollback()
                return None
            result = s.execute(
                update(Checkout)
                .where(col(Checkout.id) == checkout_id, col(Checkout.state) == current.state)
                .values(state=target.value, version=Checkout.version + 1, updated_at=now, **fields)
            )
            if result.rowcount != 1:  # pragma: no cover - guarded by the row lock above
                s.rollback()
                return None
            s.add(Transition(checkout_id=checkout_id, from_state=current.state, to_state=target.value,
                             reason=reason[:200], at=now))
            s.commit()
            return s.get(Checkout, checkout_id, populate_existing=True)

    def update_fields(self, checkout_id: str, *, states: Iterable[State] | None = None, **fields: Any) -> bool:
        """Set fields without a state change, only while the saga is in ``states`` (default: not final)."""
        guard = [s.value for s in (states if states is not None else set(State) - FINAL)]
        with self.session() as s:
            result = s.execute(
                update(Checkout)
                .where(col(Checkout.id) == checkout_id, col(Checkout.state).in_(guard))
                .values(version=Checkout.version + 1, updated_at=self.clock(), **fields)
            )
            s.commit()
            return result.rowcount == 1

    # --- write-ahead step attempts ------------------------------------------------------

    def begin_attempt(self, checkout_id: str, step: str, reference: str | None, task_id: str | None) -> int:
        with self.session() as s:
            attempt = StepAttempt(checkout_id=checkout_id, step=step, reference=reference, task_id=task_id,
                                  started_at=self.clock())
            s.add(attempt)
            s.commit()
            assert attempt.id is not None
            return attempt.id

    def finish_attempt(self, attempt_id: int, outcome: str, detail: str | None = None) -> None:
        with self.session() as s:
            s.execute(update(StepAttempt).where(col(StepAttempt.id) == attempt_id)
                      .values(outcome=outcome, detail=(detail or "")[:500] or None, finished_at=self.clock()))
            s.commit()

    def unresolved_attempts(self, checkout_id: str, steps: Iterable[str]) -> list[StepAttempt]:
        """Attempts whose outcome nobody knows: still ``in_flight`` (a crash) or ``unknown`` (a timeout)."""
        with self.read_session() as s:
            q = select(StepAttempt).where(StepAttempt.checkout_id == checkout_id,
                                          col(StepAttempt.step).in_(list(steps)),
                                          col(StepAttempt.outcome).in_(["in_flight", "unknown"]))
            return list(s.exec(q))

    def resolve_attempts(self, attempt_ids: Iterable[int], outcome: str, detail: str) -> None:
        ids = list(attempt_ids)
        if not ids:
            return
        with self.session() as s:
            s.execute(update(StepAttempt).where(col(StepAttempt.id).in_(ids))
                      .values(outcome=outcome, detail=detail[:500], finished_at=self.clock()))
            s.commit()

    # --- due rows -----------------------------------------------------------------------

    def claim_due(self, now: dt.datetime, lease_until: dt.datetime, limit: int) -> list[tuple[str, str]]:
        """Take up to ``limit`` sagas whose next step is due, oldest first, moving their due time to
        ``lease_until`` in the same transaction.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so concurrent sweeps take disjoint rows. SQLite:
        the transaction is ``BEGIN IMMEDIATE``, so sweeps run one after another and the second
        finds the rows no longer due. Either way a row is enqueued once per lease. The query
        walks ``ix_checkout_due``: its cost follows the due rows, not the table.
        """
        finals = [s.value for s in FINAL]
        with self.session() as s:
            q = (select(Checkout.id, Checkout.state)
                 .where(col(Checkout.next_due_at) <= now, col(Checkout.state).not_in(finals))
                 .order_by(col(Checkout.next_due_at)).limit(limit).with_for_update(skip_locked=True))
            rows = [(r[0], r[1]) for r in s.exec(q)]
            if rows:
                s.execute(update(Checkout).where(col(Checkout.id).in_([r[0] for r in rows]))
                          .values(next_due_at=lease_until))
            s.commit()
            return rows

    def claim_due_refunds(self, now: dt.datetime, lease_until: dt.datetime, limit: int) -> list[str]:
        from orchestrator.db.models import Refund

        with self.session() as s:
            q = (select(Refund.id).where(col(Refund.next_due_at) <= now)
                 .order_by(col(Refund.next_due_at)).limit(limit).with_for_update(skip_locked=True))
            ids = list(s.exec(q))
            if ids:
                s.execute(update(Refund).where(col(Refund.id).in_(ids)).values(next_due_at=lease_until))
            s.commit()
            return ids

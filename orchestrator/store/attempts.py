"""Write-ahead step attempts: an ``in_flight`` attempt committed before a call to Plural, its
outcome recorded after (with the run's next write)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Iterable

from sqlalchemy import update
from sqlmodel import col, select

from orchestrator.store.claims import Claim, LostClaim
from orchestrator.store.connected import Connected, nothing_written
from orchestrator.store.models import StepAttempt
from orchestrator.store.statements import ADD_ATTEMPT, HELD, TAKE, TAKE_THEN_ATTEMPT, Finished


class Attempts(Connected):
    """The repository's step attempts (``Repo`` inherits them)."""

    def begin_attempt(self, checkout_id: str, step: str, reference: str | None, task_id: str | None,
                      claim: Claim | None = None, finish: Finished | None = None) -> int:
        """Write ahead: commit an ``in_flight`` attempt before the call, with the outcomes of the
        run's earlier calls. A run's first write-ahead takes its claim in the same transaction (on
        PostgreSQL, when there are no outcomes to record, in the same statement: one round trip
        in autocommit); a later one is fenced by it."""
        now = self.clock()
        take: dict[str, Any] = {}
        if claim is not None and claim.token is None:
            take = {"b_id": checkout_id, "b_version": claim.version, "b_now": now, "b_token": uuid.uuid4().hex,
                    "b_until": now + dt.timedelta(seconds=claim.lease_seconds)}
        attempt = {"step": step, "reference": reference, "outcome": "in_flight", "task_id": task_id,
                   "started_at": now}
        if take and not finish and self.engine.dialect.name == "postgresql":
            with self.single_engine.connect() as conn:
                added = conn.execute(TAKE_THEN_ATTEMPT, {**take, **{f"a_{k}": v for k, v in attempt.items()}}
                                     ).scalar()
            if added is None:  # the claim was not taken, so no attempt was added
                raise LostClaim(checkout_id)
            return self._took(claim, take, int(added))
        with self.engine.connect() as conn:
            if take:
                if conn.execute(TAKE, take).rowcount != 1:
                    nothing_written(conn)
                    raise LostClaim(checkout_id)
            elif claim is not None:
                if conn.execute(HELD, {"b_id": checkout_id}).scalar() != claim.token:
                    nothing_written(conn)
                    raise LostClaim(checkout_id)
            added = conn.execute(ADD_ATTEMPT, {"checkout_id": checkout_id, **attempt})
            attempt_id = int(added.inserted_primary_key[0])
            self._commit(conn, finish)
        return self._took(claim, take, attempt_id)

    @staticmethod
    def _took(claim: Claim | None, take: dict[str, Any], attempt_id: int) -> int:
        if take and claim is not None:  # the run holds the checkout from now on
            claim.token, claim.version = take["b_token"], claim.version + 1
        return attempt_id

    def finish_attempt(self, attempt_id: int, outcome: str, detail: str | None = None) -> None:
        with self.engine.connect() as conn:
            self._commit(conn, [(attempt_id, outcome, detail)])

    def has_attempt(self, checkout_id: str, step: str, reference: str | None) -> bool:
        """Was a call of ``step`` with ``reference`` made before (a repeat of an idempotent call)?"""
        if reference is None:
            return False
        with self.read_session() as s:
            return s.exec(select(StepAttempt.id).where(StepAttempt.checkout_id == checkout_id,
                                                       StepAttempt.step == step,
                                                       StepAttempt.reference == reference).limit(1)).first() is not None

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
            s.connection().execute(update(StepAttempt).where(col(StepAttempt.id).in_(ids),
                                                col(StepAttempt.outcome).in_(["in_flight", "unknown"]))
                      .values(outcome=outcome, detail=detail[:500], finished_at=self.clock()))
            s.commit()

"""The repository: every state change is compare-and-set, and leaves a row in the history.

The paths every step and every merchant request take (``load``, ``begin_attempt``, ``move``,
``note``, ``release``, a checkout's trail, ``insert``, ``get``, the look-ups, the
Idempotency-Key store) run prebuilt Core statements on a plain connection and build rows with
``detached``: building a statement, its cache key, a session's bookkeeping and the ORM's loading
cost more CPU than the SQL itself. The rest uses sessions, where that costs nothing that matters.

The repository is split by job: the statements (``statements``), its engines and commit
(``connected``), run claims (``claims``), write-ahead step attempts (``attempts``), the
Idempotency-Key store (``idempotency``); ``Repo`` here is a checkout's reads and writes.

Reads that decide nothing on their own (``load``, ``snapshot``) may see a row and its attempts
or history a moment apart on PostgreSQL (autocommit, as READ COMMITTED would anyway): a run's
first write compare-and-sets the version it read, so a run never acts on a stale row."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from sqlalchemy import update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from orchestrator.domain.saga import FINAL, State
from orchestrator.store.attempts import Attempts
from orchestrator.store.claims import Claim, Claims, LostClaim, fenced
from orchestrator.store.connected import nothing_written
from orchestrator.store.idempotency import KeyTaken, Keyed
from orchestrator.store.models import Checkout, Refund, StepAttempt, Transition, aware, detached
from orchestrator.store.statements import (ADD_CHECKOUT, ADD_EVENT, ADD_HISTORY, ATTEMPTS, BY_PLURAL_ORDER,
                                           BY_REFERENCE, EVENT_FIELDS, HISTORY, LOAD, MOVE, MOVE_HELD, NOTE,
                                           NOTE_FREE, NOTE_HELD, REFUNDS, ROW, ROW_LOCKED, ROW_WITH_HISTORY,
                                           Finished, insert_at_once, move_statement, short_detail, with_history)


#: the reason of a checkout's first history row
FIRST_REASON = "checkout received"


def may_have_refunds(c: Checkout) -> bool:
    """Refunds exist only for a COMPLETED checkout (the merchant's) or one whose late payment
    the engine refunded (``late_undo``, set in the move that creates that refund)."""
    return c.state == State.COMPLETED.value or c.late_undo == "REFUNDED"


def _move_values(before: Checkout, decided: tuple[State, dict[str, Any]], now: dt.datetime, reason: str,
                 fact: str | None, source: str | None, claim: Claim | None,
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What a decided move writes: the checkout's new values, the compare-and-set's keys (its
    version, the run's token), and its history row."""
    target, fields = decided
    values: dict[str, Any] = {**fields, "state": target.value, "version": before.version + 1, "updated_at": now}
    keys: dict[str, Any] = {"b_id": before.id, "b_version": before.version}
    if claim is not None:  # a run's move ends the run: the next step claims afresh
        values.update(claim_token=None, claim_until=None)
        if claim.token is not None:
            keys["b_token"] = claim.token
    history = {"from_state": before.state, "to_state": target.value, "fact": fact, "source": source,
               "reason": reason[:200], "at": now}
    return values, keys, history


#: ``Repo._move_at_once``'s answer when the move must be done holding the row
_HOLD_THE_ROW = object()

#: a checkout's history and refunds, as the merchant sees them
Trail = tuple[list[Transition], list[Refund]]
#: the outbox's part in a move: (before, after, the trail after the move when asked, now) → the
#: event row to add with the move, or None
Record = Callable[[Checkout, Checkout, Callable[[], Trail], dt.datetime], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Effect:
    """More rows a move writes in its own transaction, for a checkout (as it was before the move)
    where ``applies``."""

    applies: Callable[[Checkout], bool]
    write: Callable[[Connection, Checkout, State], None]


class Repo(Claims, Attempts):
    """A checkout's reads and writes: look-ups, its trail, insert, move, note (sessions, engines and
    the commit come from ``Connected``; claims and step attempts from their own modules)."""

    # --- reads --------------------------------------------------------------------------

    def get(self, checkout_id: str) -> Checkout | None:
        return self._one(ROW, {"b_id": checkout_id})

    def load(self, checkout_id: str) -> tuple[Checkout | None, dt.datetime | None, list[StepAttempt]]:
        """What a step's run starts from, in one read: the checkout, when it entered its state, and
        its step attempts."""
        key = {"b_id": checkout_id}
        with self.read_engine.connect() as conn:
            row = conn.execute(LOAD, key).first()
            if row is None:
                return None, None, []
            attempts = [detached(StepAttempt, a) for a in conn.execute(ATTEMPTS, key)]
        fields = dict(row._mapping)
        entered = fields.pop("entered_at")
        return detached(Checkout, fields), aware(entered), attempts

    def snapshot(self, checkout_id: str) -> tuple[Checkout | None, list[Transition], list[Any]]:
        """What the merchant sees of a checkout, in one read: the row, its history, its refunds."""
        with self.read_engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":  # the row and its history in one statement
                found = conn.execute(ROW_WITH_HISTORY, {"b_id": checkout_id}).first()
                if found is None:
                    return None, [], []
                row, history = with_history(found)
                return row, history, self._refunds_in(conn, row)
            found = conn.execute(ROW, {"b_id": checkout_id}).first()
            if found is None:
                return None, [], []
            row = detached(Checkout, found)
            return row, *self.trail_in(conn, row)

    def trail(self, checkout: Checkout) -> tuple[list[Transition], list[Any]]:
        """A checkout's history and refunds, in one read; none for a checkout never written since
        it was inserted (its version is 0: its history is its first row, and it has no refunds)."""
        if checkout.version == 0:
            return [Transition(checkout_id=checkout.id, from_state=None, to_state=checkout.state,
                               reason=FIRST_REASON, at=checkout.created_at)], []
        with self.read_engine.connect() as conn:
            return self.trail_in(conn, checkout)

    @staticmethod
    def trail_in(conn: Connection, checkout: Checkout) -> tuple[list[Transition], list[Refund]]:
        """A checkout's history and refunds, read on ``conn`` (a read, or a move's write); the
        refunds only where there can be some."""
        history = [detached(Transition, r) for r in conn.execute(HISTORY, {"b_id": checkout.id})]
        return history, Repo._refunds_in(conn, checkout)

    @staticmethod
    def _refunds_in(conn: Connection, checkout: Checkout) -> list[Refund]:
        """A checkout's refunds, read on ``conn`` only where there can be some."""
        if not may_have_refunds(checkout):
            return []
        return [detached(Refund, r) for r in conn.execute(REFUNDS, {"b_id": checkout.id})]

    def by_reference(self, merchant_order_reference: str) -> Checkout | None:
        return self._one(BY_REFERENCE, {"b_value": merchant_order_reference})

    def by_plural_order(self, plural_order_id: str) -> Checkout | None:
        return self._one(BY_PLURAL_ORDER, {"b_value": plural_order_id})

    def _one(self, statement: Any, params: dict[str, Any]) -> Checkout | None:
        with self.read_engine.connect() as conn:
            row = conn.execute(statement, params).first()
        return detached(Checkout, row) if row is not None else None

    def history(self, checkout_id: str) -> list[Transition]:
        with self.read_session() as s:
            rows = s.exec(select(Transition).where(Transition.checkout_id == checkout_id).order_by(col(Transition.id)))
            return list(rows)

    def entered_at(self, checkout_id: str) -> dt.datetime | None:
        """When the checkout entered its current state (its last history row)."""
        with self.read_session() as s:
            return s.exec(select(Transition.at).where(Transition.checkout_id == checkout_id)
                          .order_by(col(Transition.id).desc()).limit(1)).first()

    def attempts(self, checkout_id: str, step: str | None = None) -> list[StepAttempt]:
        with self.read_session() as s:
            q = select(StepAttempt).where(StepAttempt.checkout_id == checkout_id)
            if step is not None:
                q = q.where(StepAttempt.step == step)
            return list(s.exec(q.order_by(col(StepAttempt.id))))

    # --- writes -------------------------------------------------------------------------

    def insert(self, checkout: Checkout, keyed: Keyed | None = None) -> tuple[Checkout, bool]:
        """Insert a new checkout and its first history row (``FIRST_REASON``, at its creation); on a
        duplicate merchant reference return the existing one. ``keyed``: the request's
        Idempotency-Key, stored with its answer in the same transaction (``KeyTaken``, and nothing
        written, if another request with that key committed first)."""
        values = checkout.model_dump()
        first = {"from_state": None, "to_state": checkout.state, "fact": None, "source": None, "reason": FIRST_REASON,
                 "at": checkout.created_at}
        try:
            if self.engine.dialect.name == "postgresql":  # one statement, in autocommit
                with self.single_engine.connect() as conn:
                    added = conn.execute(insert_at_once(tuple(values), keyed is not None), {
                        **{f"c_{k}": v for k, v in values.items()}, **{f"h_{k}": v for k, v in first.items()},
                        **({f"k_{k}": v for k, v in keyed.values().items()} if keyed is not None else {}),
                    }).first() is not None
            else:
                with self.engine.connect() as conn:
                    conn.execute(ADD_CHECKOUT, values)
                    conn.execute(ADD_HISTORY, {"checkout_id": checkout.id, **first})
                    added = keyed is None or keyed.store_in(conn)
                    if added:
                        conn.commit()
                    else:
                        conn.rollback()
            if keyed is not None:
                if not added:
                    keyed.taken = True
                    raise KeyTaken(keyed.key)
                keyed.stored = True
            return checkout, True
        except IntegrityError:
            existing = self.by_reference(checkout.merchant_order_reference)
            if existing is None:
                raise
            return existing, False

    def move(self, checkout_id: str, plan: Callable[[Checkout], tuple[State, dict[str, Any]] | None], *,
             reason: str, fact: str | None = None, source: str | None = None, claim: Claim | None = None,
             effect: Effect | None = None, finish: Finished | None = None, record: Record | None = None,
             ) -> tuple[Checkout, Checkout] | None:
        """Decide and write one state change, atomically: compare-and-set on the row ``plan`` saw.

        ``plan`` sees the row as it is now and returns the target state and the fields to set, or
        None for no move. A run's write is fenced by its ``claim``: if another run holds the
        checkout (or, before the run's first write, the row changed since the run read it),
        ``LostClaim`` is raised and nothing is written. Returns (before, after), or None when
        nothing moved. With the move, and only if it is written: its history row, ``effect``'s
        rows (where it applies), the run's pending call outcomes (``finish``, emptied once they
        are committed) and the outbox's event (``record``: it sees the row before and after, and
        the trail the event shows).

        PostgreSQL decides from a plain read of the row and its history and writes all of it in
        one compare-and-set statement, in autocommit: two round trips, and no transaction held
        open while Python decides. If the row changed in between (or the move has more to write
        than that statement holds: an effect that applies, refunds to show), it takes the other
        way. SQLite, always, and PostgreSQL then: one transaction that holds the row's lock from
        the read (SQLite's writer lock) to the commit, so it decides from the row as it is.
        """
        if self.engine.dialect.name == "postgresql":
            moved = self._move_at_once(checkout_id, plan, reason, fact, source, claim, effect, finish, record)
            if moved is not _HOLD_THE_ROW:
                return moved
        with self.engine.connect() as conn:
            now = self.clock()
            found = conn.execute(ROW_LOCKED, {"b_id": checkout_id}).first()
            if found is None:
                nothing_written(conn)
                return None
            current = detached(Checkout, found)
            if claim is not None and not fenced(current, claim, now):
                nothing_written(conn)
                raise LostClaim(checkout_id)
            decided = plan(current)
            if decided is None:
                nothing_written(conn)
                return None
            return self._write_move(conn, current, decided, now, reason, fact, source, claim, effect, finish,
                                    record)

    def _move_at_once(self, checkout_id: str, plan: Callable[[Checkout], tuple[State, dict[str, Any]] | None],
                      reason: str, fact: str | None, source: str | None, claim: Claim | None,
                      effect: Effect | None, finish: Finished | None, record: Record | None) -> Any:
        """PostgreSQL's move in two autocommit statements (see ``move``); ``_HOLD_THE_ROW``, with
        nothing written, when it must be done holding the row instead."""
        now = self.clock()
        with self.single_engine.connect() as conn:
            found = conn.execute(ROW_WITH_HISTORY, {"b_id": checkout_id}).first()
            if found is None:
                return None
            current, history = with_history(found)
            if claim is not None and not fenced(current, claim, now):
                raise LostClaim(checkout_id)  # claims never come back, versions only grow
            decided = plan(current)
            if decided is None:
                return None
            if may_have_refunds(current) or (effect is not None and effect.applies(current)):
                return _HOLD_THE_ROW
            values, keys, added = _move_values(current, decided, now, reason, fact, source, claim)
            after = detached(Checkout, {**current.model_dump(), **values})
            # the trail as the move leaves it: no refunds (they need the row completed, or an effect)
            event = None if record is None else record(
                current, after, lambda: ([*history, detached(Transition, {"checkout_id": checkout_id, **added})], []),
                now)
            done = list(finish or ())
            params = {**{f"v_{k}": v for k, v in values.items()}, **keys, **{f"h_{k}": v for k, v in added.items()},
                      **({f"e_{k}": event[k] for k in EVENT_FIELDS} if event is not None else {}), "f_at": now}
            for i, (attempt_id, outcome, detail) in enumerate(done):
                params.update({f"f{i}_id": attempt_id, f"f{i}_outcome": outcome, f"f{i}short_detail": short_detail(detail)})
            statement = move_statement(tuple(values), "b_token" in keys, event is not None, len(done))
            if conn.execute(statement, params).first() is None:
                return _HOLD_THE_ROW  # it changed since the read: decide again, holding it
        if finish:
            finish.clear()
        return current, after

    def _write_move(self, conn: Connection, before: Checkout, decided: tuple[State, dict[str, Any]],
                    now: dt.datetime, reason: str, fact: str | None, source: str | None, claim: Claim | None,
                    effect: Effect | None, finish: Finished | None, record: Record | None = None,
                    ) -> tuple[Checkout, Checkout] | None:
        """Write a decided move in ``conn``'s transaction, compare-and-set on ``before``'s version
        (and the run's claim); None, with nothing written, if the row has changed."""
        values, keys, history = _move_values(before, decided, now, reason, fact, source, claim)
        held = "b_token" in keys
        if conn.dialect.name == "postgresql":  # one round trip for both
            written = conn.execute(move_statement(tuple(values), held, False, 0), {
                **{f"v_{k}": v for k, v in values.items()}, **keys,
                **{f"h_{k}": v for k, v in history.items()}}).first() is not None
        else:
            written = conn.execute(MOVE_HELD if held else MOVE, {**values, **keys}).rowcount == 1
            if written:
                conn.execute(ADD_HISTORY, {"checkout_id": before.id, **history})
        if not written:
            nothing_written(conn)
            return None
        target = State(values["state"])
        if effect is not None and effect.applies(before):
            effect.write(conn, before, target)
        # the row as written, without reading it back
        after = detached(Checkout, {**before.model_dump(), **values})
        if record is not None:
            event = record(before, after, lambda: self.trail_in(conn, after), now)
            if event is not None:
                conn.execute(ADD_EVENT, event)
        self._commit(conn, finish)
        return before, after

    def note(self, checkout_id: str, *, states: Iterable[State] | None = None, claim: Claim | None = None,
             finish: Finished | None = None, **fields: Any) -> bool:
        """Set fields without a state change, only while the checkout is in ``states`` (default: not
        final) and, for a run, while the run still holds it (or, before its first write, while the
        row is as the run read it)."""
        now = self.clock()
        keys: dict[str, Any] = {"b_id": checkout_id,
                                "b_states": [s.value for s in (states if states is not None else set(State) - FINAL)]}
        statement = NOTE
        if claim is not None and claim.token is not None:
            statement, keys["b_token"] = NOTE_HELD, claim.token
        elif claim is not None:
            statement = NOTE_FREE
            keys.update(b_version=claim.version, b_now=now)
        with self.engine.connect() as conn:
            noted = conn.execute(statement, {**fields, "updated_at": now, **keys}).rowcount == 1
            self._commit(conn, finish)
        if noted and claim is not None:
            claim.version += 1
        return noted

    # --- the sealed card ----------------------------------------------------------------

    def clear_sealed_card(self, checkout_id: str) -> None:
        """Forget the sealed card a checkout accepted while Redis was away held (now in the vault).
        Nothing else changes (not the state, not the version)."""
        with self.session() as s:
            s.connection().execute(update(Checkout).where(col(Checkout.id) == checkout_id)
                                   .values(sealed_card=None))
            s.commit()


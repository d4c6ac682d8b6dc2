"""The repository: every state change is compare-and-set, and leaves a row in the history.

The paths every step and every merchant request take (``load``, ``begin_attempt``, ``move``,
``note``, ``release``, a checkout's trail, ``insert``, ``get``, the look-ups, the
Idempotency-Key store) run prebuilt Core statements on a plain connection and build rows with
``detached``: building a statement, its cache key, a session's bookkeeping and the ORM's loading
cost more CPU than the SQL itself. The rest uses sessions, where that costs nothing that matters.

Reads that decide nothing on their own (``load``, ``snapshot``) may see a row and its attempts
or history a moment apart on PostgreSQL (autocommit, as READ COMMITTED would anyway): a run's
first write compare-and-sets the version it read, so a run never acts on a stale row."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import uuid

from sqlalchemy import bindparam, delete, func, insert, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from orchestrator.domain.saga import FINAL, State
from orchestrator.store.models import (Checkout, MerchantEvent, Refund, StepAttempt, Transition, aware, detached,
                                    utcnow)


#: the reason of a checkout's first history row
FIRST_REASON = "checkout received"

#: a run's call outcomes not yet written: (attempt id, outcome, detail)
Finished = list[tuple[int, str, "str | None"]]


def insert_skipping(engine: Engine, table: Any, unique: list[str]) -> Any:
    """``INSERT … ON CONFLICT (unique) DO NOTHING`` for this engine's dialect (SQLite or PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=unique)


_checkout = Checkout.__table__  # type: ignore[attr-defined]
_history = Transition.__table__  # type: ignore[attr-defined]
_attempt = StepAttempt.__table__  # type: ignore[attr-defined]
_refund = Refund.__table__  # type: ignore[attr-defined]
_event = MerchantEvent.__table__  # type: ignore[attr-defined]

# prebuilt statements (parameters named b_*; an UPDATE's SET comes from the other keys given)
_ROW = core_select(_checkout).where(_checkout.c.id == bindparam("b_id"))
_ROW_LOCKED = _ROW.with_for_update()
_BY_REFERENCE = core_select(_checkout).where(_checkout.c.merchant_order_reference == bindparam("b_value"))
_BY_PLURAL_ORDER = core_select(_checkout).where(_checkout.c.plural_order_id == bindparam("b_value")).limit(1)
# a step's starting row and when it entered its state (its last history row), in one statement
_LOAD = core_select(_checkout, core_select(_history.c.at).where(_history.c.checkout_id == _checkout.c.id)
                    .order_by(_history.c.id.desc()).limit(1).scalar_subquery().label("entered_at")
                    ).where(_checkout.c.id == bindparam("b_id"))
# PostgreSQL: a checkout with its history in one read, the history as one JSON array of
# [from, to, fact, source, reason, at] arrays, oldest first
_HISTORY_COLUMNS = ("from_state", "to_state", "fact", "source", "reason", "at")
_ROW_WITH_HISTORY = core_select(_checkout, core_select(func.json_agg(aggregate_order_by(
    func.json_build_array(*(_history.c[f] for f in _HISTORY_COLUMNS)), _history.c.id)))
    .where(_history.c.checkout_id == _checkout.c.id).scalar_subquery().label("history_json")
    ).where(_checkout.c.id == bindparam("b_id"))
_ATTEMPTS = core_select(_attempt).where(_attempt.c.checkout_id == bindparam("b_id")).order_by(_attempt.c.id)
_HISTORY = core_select(_history).where(_history.c.checkout_id == bindparam("b_id")).order_by(_history.c.id)
_REFUNDS = (core_select(_refund).where(_refund.c.checkout_id == bindparam("b_id"))
            .order_by(_refund.c.created_at))
_MOVE = update(_checkout).where(_checkout.c.id == bindparam("b_id"), _checkout.c.version == bindparam("b_version"))
_MOVE_HELD = _MOVE.where(_checkout.c.claim_token == bindparam("b_token"))
_NOTE = (update(_checkout).where(_checkout.c.id == bindparam("b_id"), _checkout.c.state.in_(bindparam("b_states",
                                                                                                         expanding=True)))
         .values(version=_checkout.c.version + 1))
_NOTE_HELD = _NOTE.where(_checkout.c.claim_token == bindparam("b_token"))
# ``claim_free`` at the version a run read, as a condition: no live claim, no change since
_FREE_AT_VERSION = (_checkout.c.version == bindparam("b_version")) & or_(
    _checkout.c.claim_token.is_(None), _checkout.c.claim_until < bindparam("b_now"))
_NOTE_FREE = _NOTE.where(_FREE_AT_VERSION)
_TAKE = (update(_checkout).where(_checkout.c.id == bindparam("b_id"), _FREE_AT_VERSION)
         .values(claim_token=bindparam("b_token"), claim_until=bindparam("b_until"), version=_checkout.c.version + 1))


def _then_add(change: Any, table: Any, fields: tuple[str, ...], prefix: str) -> Any:
    """PostgreSQL: ``change`` (a compare-and-set UPDATE of a checkout) and a row of ``table`` for
    that checkout, added only if the UPDATE changed it, as one statement (a data-modifying CTE).
    The row's ``fields`` come from the parameters named ``prefix + field``; its id comes back, or
    no row when the compare-and-set found the checkout changed."""
    changed = change.returning(_checkout.c.id).cte("changed")
    return _add_for(changed, table, fields, prefix).returning(table.c.id)


def _add_for(written: Any, table: Any, fields: tuple[str, ...], prefix: str) -> Any:
    """An INSERT of a row of ``table`` for each checkout id the CTE ``written`` returns (so none if
    it wrote none), its ``fields`` from the parameters named ``prefix + field``."""
    row = core_select(written.c.id, *(bindparam(prefix + f, type_=table.c[f].type) for f in fields))
    return insert(table).from_select(["checkout_id", *fields], row)


_ATTEMPT_FIELDS = ("step", "reference", "outcome", "task_id", "started_at")
_HISTORY_FIELDS = ("from_state", "to_state", "fact", "source", "reason", "at")
# a run's first write-ahead: its claim taken, and the attempt added only if it was; atomic alone,
# so one round trip in autocommit instead of BEGIN, two statements and COMMIT
_TAKE_THEN_ATTEMPT = _then_add(_TAKE, _attempt, _ATTEMPT_FIELDS, "a_")
_HELD = core_select(_checkout.c.claim_token).where(_checkout.c.id == bindparam("b_id")).with_for_update()
_ADD_CHECKOUT = insert(_checkout)
_ADD_HISTORY = insert(_history)
_ADD_ATTEMPT = insert(_attempt)
#: an outbox event (the outbox builds its row)
ADD_EVENT = insert(_event)
_FINISH = (update(_attempt).where(_attempt.c.id == bindparam("b_id"))
           .values(outcome=bindparam("b_outcome"), detail=bindparam("b_detail"), finished_at=bindparam("b_at")))


class LostClaim(RuntimeError):
    """A run tried to write after another run took its checkout (or changed it since the run read
    it): it must stop."""


@dataclass
class Claim:
    """A run's hold on its checkout, taken by the run's first write.

    That write compare-and-sets the ``version`` the run read and finds no live claim, and sets
    the claim's token in the same statement (bumping the version): a run that decided from a stale
    row never writes, two runs never both get past their first write, and a run that only reads
    (a duplicate delivery, a step for a state already left) writes nothing. Every later write of
    the run is fenced by the ``token``; the run's move gives the claim back.
    """

    version: int
    lease_seconds: float
    token: str | None = None


@functools.cache
def _claim_statements(table: type[Any]) -> tuple[Any, Any, Any]:
    """For a claimable table (a checkout, a refund): read a row under its lock, give its claim
    back while the token still holds it, and move the claim's end while the token still holds it."""
    t = table.__table__
    held = (t.c.id == bindparam("b_id")) & (t.c.claim_token == bindparam("b_token"))
    return (core_select(t).where(t.c.id == bindparam("b_id")).with_for_update(),
            update(t).where(held).values(claim_token=None, claim_until=None),
            update(t).where(held).values(claim_until=bindparam("b_until")))


@functools.lru_cache(maxsize=8)
def _renew_batch(table: type[Any]) -> Any:
    """For a table claimed a batch at a time (``claim``, ``claim_until``): move the end of the
    claim a token holds on every row still being processed."""
    t = table.__table__
    return (update(t).where(t.c.claim == bindparam("b_token"), t.c.status == "processing")
            .values(claim_until=bindparam("b_until")))


def _set(columns: tuple[str, ...], held: bool) -> Any:
    return (_MOVE_HELD if held else _MOVE).values({c: bindparam(f"v_{c}", type_=_checkout.c[c].type)
                                                   for c in columns})


_EVENT_FIELDS = ("event_id", "type", "subject_id", "refund_id", "payload", "created_at", "status", "attempts",
                 "next_attempt_at")


@functools.lru_cache(maxsize=1024)
def _move_statement(columns: tuple[str, ...], held: bool, event: bool, finished: int) -> Any:
    """PostgreSQL: everything a decided move writes, as one statement (data-modifying CTEs) that
    writes only if its compare-and-set does: the checkout's fields (``v_*``), its history row
    (``h_*``), its outbox event if ``event`` (``e_*``), and the outcomes of the run's ``finished``
    calls (``f<i>_id``, ``f<i>_outcome``, ``f<i>_detail``, ``f_at``). A row comes back if it
    wrote, none if the checkout had changed."""
    changed = _set(columns, held).returning(_checkout.c.id).cte("changed")
    writes = [_add_for(changed, _history, _HISTORY_FIELDS, "h_").cte("added_history")]
    if event:
        writes.append(insert(_event).from_select(list(_EVENT_FIELDS), core_select(
            *(bindparam(f"e_{f}", type_=_event.c[f].type) for f in _EVENT_FIELDS)).select_from(changed))
            .cte("added_event"))
    writes += [update(_attempt).where(_attempt.c.id == bindparam(f"f{i}_id"), core_select(changed.c.id).exists())
               .values(outcome=bindparam(f"f{i}_outcome"), detail=bindparam(f"f{i}_detail"),
                       finished_at=bindparam("f_at", type_=_attempt.c.finished_at.type)).cte(f"finished_{i}")
               for i in range(finished)]
    return core_select(changed.c.id).add_cte(*writes)


@functools.lru_cache(maxsize=8)
def _insert_at_once(columns: tuple[str, ...], keyed: bool) -> Any:
    """PostgreSQL: a new checkout (``columns``, from ``c_*``) and its first history row (``h_*``)
    as one statement; with ``keyed``, the request's Idempotency-Key and its answer too (``k_*``),
    and the checkout only if the key was not taken already. A row comes back if it wrote; none
    if the key was taken (nothing written)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from orchestrator.store.models import IdempotencyKey

    row = core_select(*(bindparam(f"c_{c}", type_=_checkout.c[c].type) for c in columns))
    if keyed:
        keys = IdempotencyKey.__table__  # type: ignore[attr-defined]
        fields = ("key", "scope", "request_hash", "created_at", "status_code", "response_body")
        kept = (pg_insert(keys).values({f: bindparam(f"k_{f}", type_=keys.c[f].type) for f in fields})
                .on_conflict_do_nothing(index_elements=["key", "scope"]).returning(keys.c.key).cte("kept_key"))
        row = row.select_from(kept)
    added = insert(_checkout).from_select(list(columns), row).returning(_checkout.c.id).cte("added_checkout")
    return core_select(added.c.id).add_cte(_add_for(added, _history, _HISTORY_FIELDS, "h_").cte("added_history"))


def may_have_refunds(c: Checkout) -> bool:
    """Refunds exist only for a COMPLETED checkout (the merchant's) or one whose late payment
    the engine refunded (``late_undo``, set in the move that creates that refund)."""
    return c.state == State.COMPLETED.value or c.late_undo == "REFUNDED"


def claim_free(row: Any, now: dt.datetime) -> bool:
    """No run holds ``row`` (nobody claimed it, or the holder's lease ran out)."""
    until = aware(row.claim_until)
    return row.claim_token is None or (until is not None and until < now)


def _nothing_written(conn: Connection) -> None:
    """End a write transaction that wrote nothing (a failed compare-and-set, no move decided).

    With a COMMIT, not a ROLLBACK: there is nothing to undo either way, and psycopg forgets every
    statement it has prepared on a connection whenever that connection rolls back (SQLite does not
    care). Errors still roll back, through the connection's context."""
    conn.commit()


def _detail(detail: str | None) -> str | None:
    return (detail or "")[:500] or None


def _with_history(found: Any) -> tuple[Checkout, list[Transition]]:
    """A checkout and its history from a row of ``_ROW_WITH_HISTORY`` (the history's times as
    PostgreSQL wrote them into its JSON, in the session's time zone)."""
    fields = dict(found._mapping)
    history = []
    for item in fields.pop("history_json") or ():
        step = dict(zip(_HISTORY_COLUMNS, item))
        step["at"] = dt.datetime.fromisoformat(step["at"]).astimezone(dt.timezone.utc)
        history.append(detached(Transition, {"checkout_id": fields["id"], **step}))
    return detached(Checkout, fields), history


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


class Repo:
    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime] = utcnow):
        self.engine = engine
        self.clock = clock
        from orchestrator.store.engine import reader

        self.read_engine = reader(engine)
        #: for writes whose statements are each safe alone (one statement, or compare-and-set ones):
        #: autocommit on PostgreSQL, one round trip each instead of a BEGIN and a COMMIT around
        #: them; the writers' engine on SQLite (its lock)
        self.single_engine = self.read_engine if engine.dialect.name == "postgresql" else engine

    def session(self) -> Session:
        """A session for writing (and for reads that decide a write)."""
        return Session(self.engine, expire_on_commit=False)

    def read_session(self) -> Session:
        """A session for plain reads."""
        return Session(self.read_engine, expire_on_commit=False)

    # --- reads --------------------------------------------------------------------------

    def get(self, checkout_id: str) -> Checkout | None:
        return self._one(_ROW, {"b_id": checkout_id})

    def load(self, checkout_id: str) -> tuple[Checkout | None, dt.datetime | None, list[StepAttempt]]:
        """What a step's run starts from, in one read: the checkout, when it entered its state, and
        its step attempts."""
        key = {"b_id": checkout_id}
        with self.read_engine.connect() as conn:
            row = conn.execute(_LOAD, key).first()
            if row is None:
                return None, None, []
            attempts = [detached(StepAttempt, a) for a in conn.execute(_ATTEMPTS, key)]
        fields = dict(row._mapping)
        entered = fields.pop("entered_at")
        return detached(Checkout, fields), aware(entered), attempts

    def snapshot(self, checkout_id: str) -> tuple[Checkout | None, list[Transition], list[Any]]:
        """What the merchant sees of a checkout, in one read: the row, its history, its refunds."""
        with self.read_engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":  # the row and its history in one statement
                found = conn.execute(_ROW_WITH_HISTORY, {"b_id": checkout_id}).first()
                if found is None:
                    return None, [], []
                row, history = _with_history(found)
                return row, history, self._refunds_in(conn, row)
            found = conn.execute(_ROW, {"b_id": checkout_id}).first()
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
        history = [detached(Transition, r) for r in conn.execute(_HISTORY, {"b_id": checkout.id})]
        return history, Repo._refunds_in(conn, checkout)

    @staticmethod
    def _refunds_in(conn: Connection, checkout: Checkout) -> list[Refund]:
        """A checkout's refunds, read on ``conn`` only where there can be some."""
        if not may_have_refunds(checkout):
            return []
        return [detached(Refund, r) for r in conn.execute(_REFUNDS, {"b_id": checkout.id})]

    def by_reference(self, merchant_order_reference: str) -> Checkout | None:
        return self._one(_BY_REFERENCE, {"b_value": merchant_order_reference})

    def by_plural_order(self, plural_order_id: str) -> Checkout | None:
        return self._one(_BY_PLURAL_ORDER, {"b_value": plural_order_id})

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
                    added = conn.execute(_insert_at_once(tuple(values), keyed is not None), {
                        **{f"c_{k}": v for k, v in values.items()}, **{f"h_{k}": v for k, v in first.items()},
                        **({f"k_{k}": v for k, v in keyed.values().items()} if keyed is not None else {}),
                    }).first() is not None
            else:
                with self.engine.connect() as conn:
                    conn.execute(_ADD_CHECKOUT, values)
                    conn.execute(_ADD_HISTORY, {"checkout_id": checkout.id, **first})
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
            found = conn.execute(_ROW_LOCKED, {"b_id": checkout_id}).first()
            if found is None:
                _nothing_written(conn)
                return None
            current = detached(Checkout, found)
            if claim is not None and not self._fenced(current, claim, now):
                _nothing_written(conn)
                raise LostClaim(checkout_id)
            decided = plan(current)
            if decided is None:
                _nothing_written(conn)
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
            found = conn.execute(_ROW_WITH_HISTORY, {"b_id": checkout_id}).first()
            if found is None:
                return None
            current, history = _with_history(found)
            if claim is not None and not self._fenced(current, claim, now):
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
                      **({f"e_{k}": event[k] for k in _EVENT_FIELDS} if event is not None else {}), "f_at": now}
            for i, (attempt_id, outcome, detail) in enumerate(done):
                params.update({f"f{i}_id": attempt_id, f"f{i}_outcome": outcome, f"f{i}_detail": _detail(detail)})
            statement = _move_statement(tuple(values), "b_token" in keys, event is not None, len(done))
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
            written = conn.execute(_move_statement(tuple(values), held, False, 0), {
                **{f"v_{k}": v for k, v in values.items()}, **keys,
                **{f"h_{k}": v for k, v in history.items()}}).first() is not None
        else:
            written = conn.execute(_MOVE_HELD if held else _MOVE, {**values, **keys}).rowcount == 1
            if written:
                conn.execute(_ADD_HISTORY, {"checkout_id": before.id, **history})
        if not written:
            _nothing_written(conn)
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
        statement = _NOTE
        if claim is not None and claim.token is not None:
            statement, keys["b_token"] = _NOTE_HELD, claim.token
        elif claim is not None:
            statement = _NOTE_FREE
            keys.update(b_version=claim.version, b_now=now)
        with self.engine.connect() as conn:
            noted = conn.execute(statement, {**fields, "updated_at": now, **keys}).rowcount == 1
            self._commit(conn, finish)
        if noted and claim is not None:
            claim.version += 1
        return noted

    @staticmethod
    def _fenced(row: Checkout, claim: Claim, now: dt.datetime) -> bool:
        """May ``claim``'s run write ``row`` (read under the row lock)?"""
        if claim.token is not None:
            return row.claim_token == claim.token
        return row.version == claim.version and claim_free(row, now)

    def _commit(self, conn: Connection | Session, finish: Finished | None) -> None:
        """Commit, recording a run's pending call outcomes in the same transaction (and forgetting
        them once they are written)."""
        if finish:
            at = self.clock()
            on = conn if isinstance(conn, Connection) else conn.connection()
            on.execute(_FINISH, [{"b_id": attempt_id, "b_outcome": outcome, "b_detail": _detail(detail), "b_at": at}
                                 for attempt_id, outcome, detail in finish])
        conn.commit()
        if finish:
            finish.clear()

    # --- run claims ---------------------------------------------------------------------

    def claim(self, table: type[Any], row_id: str, lease_seconds: float) -> str | None:
        """Take ``row_id`` for one run: a token, or None while another run holds an unexpired claim."""
        token = uuid.uuid4().hex
        now = self.clock()
        with self.session() as s:
            result = s.connection().execute(update(table).where(
                col(table.id) == row_id,
                or_(col(table.claim_token).is_(None), col(table.claim_until) < now))
                .values(claim_token=token, claim_until=now + dt.timedelta(seconds=lease_seconds)))
            s.commit()
            return token if result.rowcount == 1 else None

    def release(self, table: type[Any], row_id: str, token: str, finish: Finished | None = None) -> Any | None:
        """Give the claim back; the row as it is now if this run still held it, else None. A run's
        pending call outcomes are recorded either way (they are facts about calls it made)."""
        locked, release, _ = _claim_statements(table)
        with self.engine.connect() as conn:
            found = conn.execute(locked, {"b_id": row_id}).first()
            held = found is not None and found.claim_token == token
            if held:
                conn.execute(release, {"b_id": row_id, "b_token": token})
            self._commit(conn, finish)
        return detached(table, found) if held else None

    def renew(self, table: type[Any], claims: list[tuple[str, str, dt.datetime]]) -> None:
        """Move the end of each claim (row id, token, new end) that its token still holds; a claim
        given back or taken over since is left alone. Nothing else changes (not the version). A
        batch's claim (webhook events) is renewed on every row its token holds."""
        if not claims:
            return
        if "claim_token" in table.__table__.c:
            _, _, renew = _claim_statements(table)
            params = [{"b_id": row_id, "b_token": token, "b_until": until} for row_id, token, until in claims]
        else:  # a batch's claim (webhook events): every row its token holds
            renew, params = _renew_batch(table), [{"b_token": token, "b_until": until} for _, token, until in claims]
        with self.engine.connect() as conn:
            conn.execute(renew, params)
            conn.commit()

    def holds(self, table: type[Any], row_id: str, token: str) -> bool:
        with self.read_session() as s:
            return s.exec(select(table.claim_token).where(table.id == row_id)).first() == token

    # --- write-ahead step attempts ------------------------------------------------------

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
                added = conn.execute(_TAKE_THEN_ATTEMPT, {**take, **{f"a_{k}": v for k, v in attempt.items()}}
                                     ).scalar()
            if added is None:  # the claim was not taken, so no attempt was added
                raise LostClaim(checkout_id)
            return self._took(claim, take, int(added))
        with self.engine.connect() as conn:
            if take:
                if conn.execute(_TAKE, take).rowcount != 1:
                    _nothing_written(conn)
                    raise LostClaim(checkout_id)
            elif claim is not None:
                if conn.execute(_HELD, {"b_id": checkout_id}).scalar() != claim.token:
                    _nothing_written(conn)
                    raise LostClaim(checkout_id)
            added = conn.execute(_ADD_ATTEMPT, {"checkout_id": checkout_id, **attempt})
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

    # --- due rows -----------------------------------------------------------------------

    def clear_sealed_card(self, checkout_id: str) -> None:
        """Forget the sealed card a checkout accepted while Redis was away held (now in the vault).
        Nothing else changes (not the state, not the version)."""
        with self.session() as s:
            s.connection().execute(update(Checkout).where(col(Checkout.id) == checkout_id)
                                   .values(sealed_card=None))
            s.commit()

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
                s.connection().execute(update(Checkout).where(col(Checkout.id).in_([r[0] for r in rows]))
                          .values(next_due_at=lease_until))
            s.commit()
            return rows

    def claim_due_refunds(self, now: dt.datetime, lease_until: dt.datetime, limit: int) -> list[str]:
        from orchestrator.store.models import Refund

        with self.session() as s:
            q = (select(Refund.id).where(col(Refund.next_due_at) <= now)
                 .order_by(col(Refund.next_due_at)).limit(limit).with_for_update(skip_locked=True))
            ids = list(s.exec(q))
            if ids:
                s.connection().execute(update(Refund).where(col(Refund.id).in_(ids)).values(next_due_at=lease_until))
            s.commit()
            return ids


class KeyTaken(Exception):
    """Another request with this Idempotency-Key committed its effect first: nothing was written."""


@dataclass
class Keyed:
    """A request's Idempotency-Key, stored with its answer in the transaction of the request's
    effect (so the key exists exactly when the effect does), by the handler that knows both."""

    key: str
    scope: str
    request_hash: str
    store: "IdempotencyStore"
    #: the answer to store with the key (status, JSON body)
    answer: tuple[int, str] | None = None
    #: the key and its answer were committed with the effect
    stored: bool = False
    #: another request with this key committed first
    taken: bool = False

    def store_in(self, conn: Connection) -> bool:
        """In the effect's transaction: the key with ``answer``; False if the key is taken."""
        assert self.answer is not None
        return self.store.insert_in(conn, self.key, self.scope, self.request_hash, *self.answer)

    def values(self) -> dict[str, Any]:
        """The key's row, with ``answer``."""
        assert self.answer is not None
        return self.store.row(self.key, self.scope, self.request_hash, *self.answer)


class IdempotencyStore:
    """Stripe's semantics for ``Idempotency-Key``: the same key and body get the first answer; the
    same key with another body is a conflict; a key whose first request is still being answered
    is a conflict too. Keys are kept ``keep`` (at least 24 h) and pruned by the sweep.

    A first request that never answered (its process died mid-request) does not hold its key for
    ``keep``: once ``abandon_after`` has passed without an answer, a retry with the same body
    takes the key over and runs (the actions behind it are safe to run again: a merchant
    reference is unique, a step checks the state). Taking a key over, or renewing an expired
    one, is compare-and-set on the time it was taken, so of two retries at once one runs."""

    def __init__(self, repo: Repo, keep: dt.timedelta = dt.timedelta(hours=48),
                 abandon_after: dt.timedelta = dt.timedelta(seconds=60)):
        from orchestrator.store.models import IdempotencyKey

        self.repo, self.keep, self.abandon_after = repo, keep, abandon_after
        table = IdempotencyKey.__table__  # type: ignore[attr-defined]
        this = (table.c.key == bindparam("b_key")) & (table.c.scope == bindparam("b_scope"))
        self._begin = insert_skipping(repo.engine, table, ["key", "scope"]).returning(table.c.key)
        self._row = core_select(table).where(this)
        self._take = (update(table).where(this, table.c.created_at == bindparam("b_taken"))
                      .values(status_code=None, response_body=None))
        self._answer = update(table).where(this)
        self._forget = delete(table).where(this, table.c.status_code.is_(None))

    def begin(self, key: str, scope: str, request_hash: str) -> tuple[str, Any]:
        """('new', None) to go ahead; ('replay', row), ('mismatch', row) or ('in_progress', row).
        The common case (a new key) is one statement: an insert that skips an existing key."""
        now = self.repo.clock()
        this = {"b_key": key, "b_scope": scope}
        with self.repo.single_engine.connect() as conn:
            if conn.execute(self._begin, {"key": key, "scope": scope, "request_hash": request_hash,
                                          "created_at": now}).first() is not None:
                conn.commit()
                return "new", None
            row = conn.execute(self._row, this).first()
            if row is None:  # pruned between the two statements
                conn.commit()
                return "new", None
            taken = aware(row.created_at)
            expired = taken < now - self.keep  # the key is new again, whatever the body
            abandoned = (row.status_code is None and row.request_hash == request_hash
                         and taken < now - self.abandon_after)
            if expired or abandoned:
                took = conn.execute(self._take, {**this, "b_taken": row.created_at, "request_hash": request_hash,
                                                 "created_at": now}).rowcount == 1
                conn.commit()
                return ("new", None) if took else ("in_progress", row)
            conn.commit()
        return self._held(row, request_hash)

    def keyed(self, key: str, scope: str, request_hash: str) -> Keyed:
        """A request's key, for an effect that stores it with its answer in its own transaction."""
        return Keyed(key, scope, request_hash, self)

    def insert_in(self, conn: Connection, key: str, scope: str, request_hash: str, status_code: int,
                  body: str) -> bool:
        """The key with its answer, on ``conn`` (the caller's transaction); False if it exists."""
        return conn.execute(self._begin, self.row(key, scope, request_hash, status_code, body)).first() is not None

    def row(self, key: str, scope: str, request_hash: str, status_code: int, body: str) -> dict[str, Any]:
        """A key's row, taken now, with its answer."""
        return {"key": key, "scope": scope, "request_hash": request_hash, "created_at": self.repo.clock(),
                "status_code": status_code, "response_body": body}

    def remember(self, key: str, scope: str, request_hash: str, status_code: int, body: str,
                 insert: bool = True) -> tuple[str, Any]:
        """After a request whose effect did not store its key (an error answer, an existing
        checkout, a key taken meanwhile): ('kept', None) once the answer is stored with the key
        (``insert``), else what the key already holds: ('replay', row), ('mismatch', row) or
        ('in_progress', row)."""
        with self.repo.single_engine.connect() as conn:
            if insert and self.insert_in(conn, key, scope, request_hash, status_code, body):
                conn.commit()
                return "kept", None
            row = conn.execute(self._row, {"b_key": key, "b_scope": scope}).first()
            conn.commit()
        if row is None:  # (pruned meanwhile: the caller answers as if still in progress)
            return "in_progress", None
        return self._held(row, request_hash)

    @staticmethod
    def _held(row: Any, request_hash: str) -> tuple[str, Any]:
        """What a key already held answers a request with this body: a replay, a mismatch, or
        (no answer yet) in progress."""
        if row.request_hash != request_hash:
            return "mismatch", row
        return ("replay", row) if row.status_code is not None else ("in_progress", row)

    def finish(self, key: str, scope: str, status_code: int, body: str) -> None:
        with self.repo.single_engine.connect() as conn:
            conn.execute(self._answer, {"b_key": key, "b_scope": scope, "status_code": status_code,
                                        "response_body": body})
            conn.commit()

    def forget(self, key: str, scope: str) -> None:
        """The first request failed without an answer worth keeping (a 5xx): the key may be retried."""
        with self.repo.single_engine.connect() as conn:
            conn.execute(self._forget, {"b_key": key, "b_scope": scope})
            conn.commit()

    def prune(self) -> int:
        from orchestrator.store.models import IdempotencyKey

        with self.repo.session() as s:
            result = s.connection().execute(delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < self.repo.clock() - self.keep))
            s.commit()
            return int(result.rowcount or 0)

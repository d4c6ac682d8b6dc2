"""The store's prebuilt statements (parameters named ``b_*``; an UPDATE's SET comes from the other
keys given), and the PostgreSQL-only statements built per shape (data-modifying CTEs).

Building a statement and its cache key costs more CPU than the SQL itself: the paths every step
and every merchant request take run these, built once, on a plain connection."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from orchestrator.store.models import Checkout, IdempotencyKey, MerchantEvent, Refund, StepAttempt, Transition, detached

#: a run's call outcomes not yet written: (attempt id, outcome, detail)
Finished = list[tuple[int, str, "str | None"]]


def insert_skipping(engine: Engine, table: Any, unique: list[str]) -> Any:
    """``INSERT … ON CONFLICT (unique) DO NOTHING`` for this engine's dialect (SQLite or PostgreSQL)."""
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing(index_elements=unique)


_checkout = Checkout.__table__  # type: ignore[attr-defined]
_history = Transition.__table__  # type: ignore[attr-defined]
_attempt = StepAttempt.__table__  # type: ignore[attr-defined]
_refund = Refund.__table__  # type: ignore[attr-defined]
_event = MerchantEvent.__table__  # type: ignore[attr-defined]

# prebuilt statements (parameters named b_*; an UPDATE's SET comes from the other keys given)
ROW = core_select(_checkout).where(_checkout.c.id == bindparam("b_id"))
ROW_LOCKED = ROW.with_for_update()
BY_REFERENCE = core_select(_checkout).where(_checkout.c.merchant_order_reference == bindparam("b_value"))
BY_PLURAL_ORDER = core_select(_checkout).where(_checkout.c.plural_order_id == bindparam("b_value")).limit(1)
# a step's starting row and when it entered its state (its last history row), in one statement
LOAD = core_select(_checkout, core_select(_history.c.at).where(_history.c.checkout_id == _checkout.c.id)
                    .order_by(_history.c.id.desc()).limit(1).scalar_subquery().label("entered_at")
                    ).where(_checkout.c.id == bindparam("b_id"))
# PostgreSQL: a checkout with its history in one read, the history as one JSON array of
# [from, to, fact, source, reason, at] arrays, oldest first
HISTORY_COLUMNS = ("from_state", "to_state", "fact", "source", "reason", "at")
ROW_WITH_HISTORY = core_select(_checkout, core_select(func.json_agg(aggregate_order_by(
    func.json_build_array(*(_history.c[f] for f in HISTORY_COLUMNS)), _history.c.id)))
    .where(_history.c.checkout_id == _checkout.c.id).scalar_subquery().label("history_json")
    ).where(_checkout.c.id == bindparam("b_id"))
ATTEMPTS = core_select(_attempt).where(_attempt.c.checkout_id == bindparam("b_id")).order_by(_attempt.c.id)
HISTORY = core_select(_history).where(_history.c.checkout_id == bindparam("b_id")).order_by(_history.c.id)
REFUNDS = (core_select(_refund).where(_refund.c.checkout_id == bindparam("b_id"))
            .order_by(_refund.c.created_at))
MOVE = update(_checkout).where(_checkout.c.id == bindparam("b_id"), _checkout.c.version == bindparam("b_version"))
MOVE_HELD = MOVE.where(_checkout.c.claim_token == bindparam("b_token"))
NOTE = (update(_checkout).where(_checkout.c.id == bindparam("b_id"), _checkout.c.state.in_(bindparam("b_states",
                                                                                                         expanding=True)))
         .values(version=_checkout.c.version + 1))
NOTE_HELD = NOTE.where(_checkout.c.claim_token == bindparam("b_token"))
# ``claim_free`` at the version a run read, as a condition: no live claim, no change since
FREE_AT_VERSION = (_checkout.c.version == bindparam("b_version")) & or_(
    _checkout.c.claim_token.is_(None), _checkout.c.claim_until < bindparam("b_now"))
NOTE_FREE = NOTE.where(FREE_AT_VERSION)
TAKE = (update(_checkout).where(_checkout.c.id == bindparam("b_id"), FREE_AT_VERSION)
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


ATTEMPT_FIELDS = ("step", "reference", "outcome", "task_id", "started_at")
HISTORY_FIELDS = ("from_state", "to_state", "fact", "source", "reason", "at")
# a run's first write-ahead: its claim taken, and the attempt added only if it was; atomic alone,
# so one round trip in autocommit instead of BEGIN, two statements and COMMIT
TAKE_THEN_ATTEMPT = _then_add(TAKE, _attempt, ATTEMPT_FIELDS, "a_")
HELD = core_select(_checkout.c.claim_token).where(_checkout.c.id == bindparam("b_id")).with_for_update()
ADD_CHECKOUT = insert(_checkout)
ADD_HISTORY = insert(_history)
ADD_ATTEMPT = insert(_attempt)
#: an outbox event (the outbox builds its row)
ADD_EVENT = insert(_event)
FINISH = (update(_attempt).where(_attempt.c.id == bindparam("b_id"))
           .values(outcome=bindparam("b_outcome"), detail=bindparam("b_detail"), finished_at=bindparam("b_at")))

def _set(columns: tuple[str, ...], held: bool) -> Any:
    return (MOVE_HELD if held else MOVE).values({c: bindparam(f"v_{c}", type_=_checkout.c[c].type)
                                                   for c in columns})


EVENT_FIELDS = ("event_id", "type", "subject_id", "refund_id", "payload", "created_at", "status", "attempts",
                 "next_attempt_at")


@functools.lru_cache(maxsize=1024)
def move_statement(columns: tuple[str, ...], held: bool, event: bool, finished: int) -> Any:
    """PostgreSQL: everything a decided move writes, as one statement (data-modifying CTEs) that
    writes only if its compare-and-set does: the checkout's fields (``v_*``), its history row
    (``h_*``), its outbox event if ``event`` (``e_*``), and the outcomes of the run's ``finished``
    calls (``f<i>_id``, ``f<i>_outcome``, ``f<i>short_detail``, ``f_at``). A row comes back if it
    wrote, none if the checkout had changed."""
    changed = _set(columns, held).returning(_checkout.c.id).cte("changed")
    writes = [_add_for(changed, _history, HISTORY_FIELDS, "h_").cte("added_history")]
    if event:
        writes.append(insert(_event).from_select(list(EVENT_FIELDS), core_select(
            *(bindparam(f"e_{f}", type_=_event.c[f].type) for f in EVENT_FIELDS)).select_from(changed))
            .cte("added_event"))
    writes += [update(_attempt).where(_attempt.c.id == bindparam(f"f{i}_id"), core_select(changed.c.id).exists())
               .values(outcome=bindparam(f"f{i}_outcome"), detail=bindparam(f"f{i}short_detail"),
                       finished_at=bindparam("f_at", type_=_attempt.c.finished_at.type)).cte(f"finished_{i}")
               for i in range(finished)]
    return core_select(changed.c.id).add_cte(*writes)


@functools.lru_cache(maxsize=8)
def insert_at_once(columns: tuple[str, ...], keyed: bool) -> Any:
    """PostgreSQL: a new checkout (``columns``, from ``c_*``) and its first history row (``h_*``)
    as one statement; with ``keyed``, the request's Idempotency-Key and its answer too (``k_*``),
    and the checkout only if the key was not taken already. A row comes back if it wrote; none
    if the key was taken (nothing written)."""
    row = core_select(*(bindparam(f"c_{c}", type_=_checkout.c[c].type) for c in columns))
    if keyed:
        keys = IdempotencyKey.__table__  # type: ignore[attr-defined]
        fields = ("key", "scope", "request_hash", "created_at", "status_code", "response_body")
        kept = (pg_insert(keys).values({f: bindparam(f"k_{f}", type_=keys.c[f].type) for f in fields})
                .on_conflict_do_nothing(index_elements=["key", "scope"]).returning(keys.c.key).cte("kept_key"))
        row = row.select_from(kept)
    added = insert(_checkout).from_select(list(columns), row).returning(_checkout.c.id).cte("added_checkout")
    return core_select(added.c.id).add_cte(_add_for(added, _history, HISTORY_FIELDS, "h_").cte("added_history"))


def short_detail(detail: str | None) -> str | None:
    return (detail or "")[:500] or None


def with_history(found: Any) -> tuple[Checkout, list[Transition]]:
    """A checkout and its history from a row of ``ROW_WITH_HISTORY`` (the history's times as
    PostgreSQL wrote them into its JSON, in the session's time zone)."""
    fields = dict(found._mapping)
    history = []
    for item in fields.pop("history_json") or ():
        step = dict(zip(HISTORY_COLUMNS, item))
        step["at"] = dt.datetime.fromisoformat(step["at"]).astimezone(dt.timezone.utc)
        history.append(detached(Transition, {"checkout_id": fields["id"], **step}))
    return detached(Checkout, fields), history


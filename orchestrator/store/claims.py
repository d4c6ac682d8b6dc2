"""Run claims: a run's hold on its row (``Claim``, fenced by its token), taken, renewed and given
back; and the sweeps' claims on due rows."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlalchemy import select as core_select
from sqlmodel import col, select

from orchestrator.domain.saga import FINAL
from orchestrator.store.connected import Connected
from orchestrator.store.models import Checkout, Refund, aware, detached
from orchestrator.store.statements import Finished


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


def claim_free(row: Any, now: dt.datetime) -> bool:
    """No run holds ``row`` (nobody claimed it, or the holder's lease ran out)."""
    until = aware(row.claim_until)
    return row.claim_token is None or (until is not None and until < now)


def fenced(row: Any, claim: Claim, now: dt.datetime) -> bool:
    """May ``claim``'s run write ``row`` (read under the row lock)?"""
    if claim.token is not None:
        return row.claim_token == claim.token
    return row.version == claim.version and claim_free(row, now)


class Claims(Connected):
    """The repository's claims (``Repo`` inherits them)."""

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
        with self.session() as s:
            q = (select(Refund.id).where(col(Refund.next_due_at) <= now)
                 .order_by(col(Refund.next_due_at)).limit(limit).with_for_update(skip_locked=True))
            ids = list(s.exec(q))
            if ids:
                s.connection().execute(update(Refund).where(col(Refund.id).in_(ids)).values(next_due_at=lease_until))
            s.commit()
            return ids

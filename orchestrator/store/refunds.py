"""Refunds' SQL: the merchant's request (under the checkout's row lock), the saga's compare-and-set
of a refund's state, its fenced retry fields, the engine's late-payment refund.

Each function runs on the caller's session or connection, so what the caller writes in one
transaction stays in one; the ``repo`` ones open (and commit) their own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from orchestrator.store.models import Checkout, Refund
from orchestrator.store.repo import Repo


def get(repo: Repo, refund_id: str) -> Refund | None:
    with repo.read_session() as s:
        return s.get(Refund, refund_id)


def of_checkout(repo: Repo, checkout_id: str) -> list[Refund]:
    """A checkout's refunds, oldest first."""
    with repo.read_session() as s:
        return list(s.exec(select(Refund).where(Refund.checkout_id == checkout_id).order_by(col(Refund.created_at))))


def locked_checkout(s: Session, checkout_id: str) -> Checkout | None:
    """The checkout, its row held for the rest of ``s``'s transaction (``FOR UPDATE`` on PostgreSQL)."""
    return s.exec(select(Checkout).where(Checkout.id == checkout_id).with_for_update()).first()


def by_reference(s: Session, reference: str) -> Refund | None:
    return s.exec(select(Refund).where(Refund.merchant_refund_reference == reference)).first()


def all_of(s: Session, checkout_id: str) -> list[Refund]:
    """A checkout's refunds, read in ``s``'s transaction."""
    return list(s.exec(select(Refund).where(Refund.checkout_id == checkout_id)))


def add(s: Session, refund: Refund) -> bool:
    """Add ``refund`` and commit ``s``'s transaction; False (rolled back) if its reference is taken."""
    s.add(refund)
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        return False
    return True


def for_order(repo: Repo, plural_order_id: str, refund_id: str | None) -> Refund | None:
    """The refund that Plural's refund order ``plural_order_id`` is, or that ``refund_id`` names."""
    with repo.session() as s:
        q = select(Refund).where((Refund.plural_refund_order_id == plural_order_id) | (Refund.id == (refund_id or "")))
        return s.exec(q).first()


def set_state(s: Session, refund_id: str, allowed: list[str], claim: str | None, now: dt.datetime,
              state: str, **fields: Any) -> int:
    """Compare-and-set: move the refund to ``state`` if it is in one of ``allowed`` (and still held by
    ``claim``, when given). Returns how many rows moved (0 or 1)."""
    conditions = [col(Refund.id) == refund_id, col(Refund.state).in_(allowed)]
    if claim is not None:
        conditions.append(col(Refund.claim_token) == claim)
    result = s.connection().execute(update(Refund).where(*conditions).values(state=state, updated_at=now, **fields))
    return int(result.rowcount)


def add_refunded(s: Session, checkout_id: str, amount: int, now: dt.datetime) -> None:
    """Add ``amount`` to the checkout's refunded amount, as an increment (concurrent refunds never
    lose each other's update)."""
    s.connection().execute(update(Checkout).where(col(Checkout.id) == checkout_id)
                           .values(refunded_amount=Checkout.refunded_amount + amount, updated_at=now))


def set_held(repo: Repo, refund_id: str, claim: str, **values: Any) -> None:
    """Write ``values`` on the refund if the run's ``claim`` still holds it; commits."""
    with repo.session() as s:
        s.connection().execute(update(Refund).where(col(Refund.id) == refund_id, col(Refund.claim_token) == claim)
                               .values(**values))
        s.commit()


def count(conn: Connection, checkout_id: str) -> int:
    """How many refunds the checkout has, on the caller's connection."""
    return int(conn.execute(select(func.count()).select_from(Refund).where(col(Refund.checkout_id) == checkout_id)
                            ).scalar_one())


def add_in(conn: Connection, refund: Refund) -> None:
    """Insert ``refund`` on the caller's connection (in its transaction)."""
    conn.execute(insert(Refund.__table__).values(**refund.model_dump()))  # type: ignore[attr-defined]

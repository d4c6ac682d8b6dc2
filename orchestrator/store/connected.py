"""What every part of the repository stands on: its engines, its sessions, and the commit that
records a run's pending call outcomes."""

from __future__ import annotations

import datetime as dt
from typing import Callable

from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from orchestrator.store.database import reader
from orchestrator.store.models import utcnow
from orchestrator.store.statements import FINISH, Finished, short_detail


def nothing_written(conn: Connection) -> None:
    """End a write transaction that wrote nothing (a failed compare-and-set, no move decided).

    With a COMMIT, not a ROLLBACK: there is nothing to undo either way, and psycopg forgets every
    statement it has prepared on a connection whenever that connection rolls back (SQLite does not
    care). Errors still roll back, through the connection's context."""
    conn.commit()


class Connected:
    """A repository's engines (writers, readers, single statements), its sessions and its commit."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime] = utcnow):
        self.engine = engine
        self.clock = clock
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

    def _commit(self, conn: Connection | Session, finish: Finished | None) -> None:
        """Commit, recording a run's pending call outcomes in the same transaction (and forgetting
        them once they are written)."""
        if finish:
            at = self.clock()
            on = conn if isinstance(conn, Connection) else conn.connection()
            on.execute(FINISH, [{"b_id": attempt_id, "b_outcome": outcome, "b_detail": short_detail(detail),
                                 "b_at": at} for attempt_id, outcome, detail in finish])
        conn.commit()
        if finish:
            finish.clear()


"""Database engines: SQLite (WAL) by default, PostgreSQL by ``DATABASE_URL``."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlmodel import create_engine


def make_engine(url: str, *, immediate: bool = True, threads: int = 32, **kwargs: Any) -> Engine:
    """An engine for ``url``. On SQLite, ``immediate`` makes every transaction ``BEGIN IMMEDIATE``
    (for writers); a reader engine (``immediate=False``) never takes the write lock (WAL).

    ``threads``: how many of this process's threads may use it at once. The pool keeps that many
    connections (and a few more) open between uses: a connection it had to close when handed back
    is one opened again moments later (a PostgreSQL backend forked, its prepared statements lost),
    which a pool smaller than the worker's threads did about once every two checkouts."""
    pool = {"pool_size": max(20, threads + 8), "max_overflow": 20}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **{**pool, "max_overflow": 40, **kwargs})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # transactions are begun by us (below), as BEGIN IMMEDIATE: a transaction that reads
            # then writes can never fail to upgrade its lock under concurrent writers
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        # Writers queue on a lock before BEGIN IMMEDIATE, and are woken the moment it is free
        # instead of sleeping in SQLite's busy handler (1, 2, 5, 10… ms steps): a Python lock
        # between the threads of this process, and a file lock between processes (the API and the
        # workers write the same file; without it, one process's writers starve the other's).
        writers = threading.RLock()
        between = _FileLock(Path(path + ".writers")) if path and path != ":memory:" else None
        held = threading.local()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            if immediate:
                writers.acquire()
                held.depth = getattr(held, "depth", 0) + 1
                try:
                    if held.depth == 1 and between is not None:
                        between.acquire()
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                except BaseException:
                    _release()
                    raise
            else:
                connection.exec_driver_sql("BEGIN")

        def _release(*_args: Any) -> None:
            if getattr(held, "depth", 0) > 0:
                held.depth -= 1
                if held.depth == 0 and between is not None:
                    between.release()
                writers.release()

        def _ending(verb: str) -> Callable[[Any], None]:
            # SQLAlchemy's commit and rollback events come *before* the DBAPI call: a lock released
            # there lets the next writer's BEGIN IMMEDIATE find the database still locked and
            # sleep in the busy handler. So the writer ends its transaction here itself (the
            # DBAPI call that follows finds none open and does nothing), then lets go.
            def end(connection: Any) -> None:
                if not immediate or getattr(held, "depth", 0) == 0:
                    return
                try:
                    dbapi = connection.connection.dbapi_connection
                    if dbapi is not None and dbapi.in_transaction:
                        dbapi.execute(verb)
                finally:
                    _release()

            return end

        event.listen(engine, "commit", _ending("COMMIT"))
        event.listen(engine, "rollback", _ending("ROLLBACK"))

        return engine
    for short in ("postgres://", "postgresql://"):  # Heroku-style and plain URLs: psycopg 3
        if url.startswith(short):
            url = "postgresql+psycopg://" + url[len(short):]
    # every session in UTC, whatever the server's or the database's time zone: times come back
    # as UTC (psycopg hands them back in the session's zone), and PostgreSQL's own renderings of
    # them (a history read as JSON) are in UTC too
    connect_args = {"options": "-c timezone=UTC", **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **{**pool, **kwargs})
    ping_when_idle(engine, IDLE_BEFORE_PING)
    return engine


#: a pooled connection unused this long is pinged before it is handed out
IDLE_BEFORE_PING = 10.0


def ping_when_idle(engine: Engine, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
    """Hand out only live connections, pinging those that sat idle in the pool.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per transaction, a
    fifth of all of them under load. A server restart or a dropped connection shows on
    connections that sat idle, so only those are pinged: a dead one is discarded and the pool
    hands out a fresh one (SQLAlchemy's documented checkout-event recipe). A connection that
    dies while in use fails its transaction, which is rolled back; the pool then drops every
    connection older than that failure.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi: Any, record: Any) -> None:
        record.info["returned_at"] = clock()

    @event.listens_for(engine, "checkout")
    def _handed_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or clock() - returned < idle_seconds:
            return
        try:
            cursor = dbapi.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi.rollback()
        except Exception as exc:
            raise DisconnectionError(f"an idle pooled connection is dead: {type(exc).__name__}") from exc


class _FileLock:
    """An exclusive ``flock`` on a file beside the database, shared by every process writing it
    (the caller holds the process's own lock, so one thread at a time uses it)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        self.pid = 0

    def acquire(self) -> None:
        if self.fd is None or self.pid != os.getpid():  # a forked child opens its own
            self.fd, self.pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def reader(engine: Engine) -> Engine:
    """An engine for plain reads beside the writers' ``engine``.

    SQLite: its own pool, whose transactions begin deferred, never taking the write lock (WAL).
    PostgreSQL: the same pool in autocommit: each read is one round trip, without a BEGIN and a
    ROLLBACK around it. Under READ COMMITTED every statement sees its own snapshot inside a
    transaction too, so reads see nothing different."""
    if engine.dialect.name == "sqlite":
        return make_engine(engine.url.render_as_string(hide_password=False), immediate=False,
                           pool_size=engine.pool.size())  # as many as the writers keep
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def ping(engine: Engine) -> None:
    """Can ``engine`` reach its database right now? Raises what the connection raised."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))

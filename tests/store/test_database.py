"""Database engines: pooled connections that died while idle are replaced, not handed out; reads
on PostgreSQL run in autocommit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from orchestrator.store.database import make_engine, ping, ping_when_idle, reader


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pooled(tmp_path: Any, ticks: Ticks) -> Any:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}", pool_size=1, max_overflow=0)
    ping_when_idle(engine, 10.0, clock=ticks)
    return engine


def idle_records(engine: Any) -> list[Any]:
    return list(engine.pool._pool.queue)  # the connections waiting in the pool


def kill_pooled_connection(engine: Any) -> None:
    """Close the DBAPI connection under the pool's one idle connection, as a server restart would."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    [record] = idle_records(engine)
    record.dbapi_connection.close()


def test_a_connection_that_died_while_idle_is_replaced(tmp_path):
    ticks = Ticks()
    engine = pooled(tmp_path, ticks)
    kill_pooled_connection(engine)
    ticks.now += 11
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_a_connection_used_a_moment_ago_is_not_pinged(tmp_path):
    ticks = Ticks()
    engine = pooled(tmp_path, ticks)
    kill_pooled_connection(engine)
    ticks.now += 1  # not idle long enough to be pinged: handed out as it is (and fails in use)
    with engine.connect() as conn, pytest.raises(Exception):
        conn.execute(text("SELECT 1"))


def test_on_postgresql_a_connection_killed_while_idle_is_replaced(postgres_url):
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://")).connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        other.commit()
    [record] = idle_records(engine)
    record.info["returned_at"] -= 60  # as if it had sat idle a minute
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid


def test_on_postgresql_reads_run_in_autocommit(postgres_url):
    engine = make_engine(postgres_url)
    with reader(engine).connect() as conn:
        conn.execute(text("SELECT 1"))
        assert conn.connection.dbapi_connection.autocommit is True
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        assert conn.connection.dbapi_connection.autocommit is False


def test_the_pool_keeps_a_connection_for_every_thread_that_used_one_at_once(tmp_path):
    """A connection handed back to a full pool is closed, and opened again moments later (on
    PostgreSQL a backend forked, its prepared statements lost): the pool holds as many as the
    process's threads use at once."""
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}", immediate=False, threads=48)
    held = [engine.connect() for _ in range(48)]
    for conn in held:
        conn.execute(text("SELECT 1"))
    for conn in held:
        conn.close()
    assert engine.pool.checkedin() == 48


def test_pools_are_sized_for_the_workers_threads_and_the_plural_client_keeps_that_many_sockets():
    from config import Settings
    from orchestrator.plural import PluralClient

    assert Settings(worker_concurrency=96).pool_threads == 96
    assert Settings(worker_concurrency=8).pool_threads == 40  # the API's thread pool
    client = PluralClient.from_settings(Settings(worker_concurrency=96))
    assert client.requestor._transport._pool.connection_pool_kw["maxsize"] == 96


def test_ping_passes_on_a_reachable_database_and_raises_what_an_unreachable_one_raises(tmp_path: Any) -> None:
    ping(make_engine(f"sqlite:///{tmp_path / 'up.db'}"))
    (tmp_path / "file").write_text("")
    with pytest.raises(OperationalError):  # a database under a path that is a file cannot be opened
        ping(create_engine(f"sqlite:///{tmp_path / 'file' / 'down.db'}"))

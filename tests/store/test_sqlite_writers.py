"""The embedded SQLite's writers queue on our locks, never in SQLite's busy handler."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event, text

from orchestrator.store.database import make_engine


def impatient(url: str) -> Any:
    """One of our engines whose SQLite connections fail at once on a locked database (no busy wait)."""
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _no_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    return engine


def test_writers_of_two_processes_never_find_the_database_locked(tmp_path):
    """Two engines (as the API and a worker are: separate locks in-process, one file lock
    between them) write the same file from several threads each; with SQLite's own wait turned
    off, any writer that found the database locked would fail. None does: the locks are let go
    only after the COMMIT."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engines = [impatient(url), impatient(url)]
    with engines[0].begin() as c:
        c.execute(text("CREATE TABLE t (n INTEGER)"))
    failures: list[BaseException] = []

    def write(engine: Any) -> None:
        try:
            for n in range(150):
                with engine.begin() as c:
                    c.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
        except BaseException as exc:  # "database is locked"
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(engines[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with engines[1].connect() as c:
        assert c.execute(text("SELECT count(*) FROM t")).scalar() == 900

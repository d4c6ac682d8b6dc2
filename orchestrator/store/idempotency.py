"""The Idempotency-Key store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Connection
from sqlmodel import col

from orchestrator.store.models import IdempotencyKey, aware
from orchestrator.store.statements import insert_skipping

if TYPE_CHECKING:
    from orchestrator.store.connected import Connected


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

    def __init__(self, repo: Connected, keep: dt.timedelta = dt.timedelta(hours=48),
                 abandon_after: dt.timedelta = dt.timedelta(seconds=60)):
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
        with self.repo.session() as s:
            result = s.connection().execute(delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < self.repo.clock() - self.keep))
            s.commit()
            return int(result.rowcount or 0)

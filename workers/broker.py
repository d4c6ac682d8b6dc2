"""Kombu's Redis transport, with one client object per channel instead of one per command.

Kombu's Redis channel builds a new ``redis.Redis`` for every publish, acknowledgement and
restore (``Channel._create_client``): a few hundred lines of set-up each time, about a twentieth
of a busy worker's CPU, for an object that only wraps the channel's connection pool. A
``redis.Redis`` is safe to share between threads (every command borrows a connection from the
pool), so the channel keeps one, and builds a fresh one whenever kombu replaces its pool (after
a connection error). Everything else is kombu's.

A channel also remembers how to reach Redis. When the connection to Redis drops, Celery closes the
broken kombu connection, which detaches it from its transport (``transport.client = None``), and
only then does the channel close for good: it gives back its unacknowledged messages and, for a
task still running, acknowledges late, each through a pool rebuilt from ``transport.client``.
Kombu's own ``_connparams`` then fails with ``AttributeError: 'NoneType' object has no attribute
'hostname'``, which is no connection error: Celery calls it unrecoverable and the worker exits on
every Redis restart. This channel builds such a pool from the parameters it used before; with
none known, the failure is a ``redis.ConnectionError``, which Celery expects and rides out
(unacknowledged messages come back after the visibility timeout).

Used for ``redis://`` and ``rediss://`` brokers (``workers.celery_app``).
"""

from __future__ import annotations

from typing import Any

import redis as redis_py
from kombu.transport import redis


class Channel(redis.Channel):
    _shared: Any = None
    #: the connection parameters last built, by ``asynchronous``
    _known_params: dict[bool, dict[str, Any]] | None = None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if getattr(self.connection, "client", None) is None:  # the connection has let go of the transport
            known = (self._known_params or {}).get(asynchronous)
            if known is None:
                raise redis_py.ConnectionError("the broker connection is closed")
            return dict(known)
        params = super()._connparams(asynchronous=asynchronous)
        self._known_params = {**(self._known_params or {}), asynchronous: dict(params)}
        return params

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # kombu keeps the one it builds (``Channel.client``)
            return super()._create_client(asynchronous=True)
        pool, shared = self.pool, self._shared
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared = super()._create_client()
        return shared


class Transport(redis.Transport):
    Channel = Channel


#: Celery's ``broker_transport`` for a Redis broker URL
TRANSPORT = f"{__name__}:Transport"

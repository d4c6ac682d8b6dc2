"""Kombu's Redis transport, with one client object per channel instead of one per command.

Kombu's Redis channel builds a new ``redis.Redis`` for every publish, acknowledgement and
restore (``Channel._create_client``): a few hundred lines of set-up each time, about a twentieth
of a busy worker's CPU, for an object that only wraps the channel's connection pool. A
``redis.Redis`` is safe to share between threads (every command borrows a connection from the
pool), so the channel keeps one, and builds a fresh one whenever kombu replaces its pool (after
a connection error). Everything else is kombu's.

Used for ``redis://`` and ``rediss://`` brokers (``workers.celery_app``).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    _shared: Any = None

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

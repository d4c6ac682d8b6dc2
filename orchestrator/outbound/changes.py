"""Status changes, announced: the engine publishes each change of a checkout's public status on a
Redis channel after its commit; the API's long-poll (``GET /v1/checkouts/{id}?changed_from=&wait=``)
listens, so a waiting customer is answered the moment its checkout changes instead of polling.

An announcement carries the checkout's version and, for a change the engine wrote, the merchant's
view of it as committed (the outbox event's payload, built in the move's transaction): a waiter
answers with that view, without reading the database, when it is newer than what the waiter read
(an announcement delayed behind a later change is never answered). Otherwise the announcement is
only a hint and the waiter re-reads; the database stays the truth. Redis delivers a message to
every connected subscriber, so one can be missed only while the listener is not subscribed:
every waiter re-reads whenever the subscription starts or drops, and while there is none it
re-reads every ``recheck`` seconds. While subscribed it also re-reads every
``subscribed_recheck`` seconds, for an announcement its publisher failed to send (or a
connection dead without a word). A lost message costs latency, never a wrong answer; a waiting
customer costs no reads while nothing happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator, Callable

from orchestrator.telemetry.logs import get_logger

log = get_logger("orchestrator.outbound.changes")

CHANNEL = "orchestrator:checkout-status"

#: how a change is announced: (checkout id, its new public status, its version, the merchant's
#: view of it as JSON or None)
Announce = Callable[[str, str, int, "str | None"], None]


def silent(_checkout_id: str, _status: str, _version: int, _shown: str | None) -> None:
    """No announcements (a process without Redis, or a test)."""


def redis_announcer(redis: Any) -> Announce:
    def announce(checkout_id: str, status: str, version: int, shown: str | None) -> None:
        redis.publish(CHANNEL, f"{checkout_id} {status} {version}" + (f" {shown}" if shown else ""))

    return announce


class Waiter:
    """One long poll's wake-up: ``changed`` is set by an announcement of its checkout (kept in
    ``news``, the newest one) or by the subscription starting or dropping (``reread``)."""

    __slots__ = ("changed", "news", "reread")

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        #: (version, status, view as JSON or None) of the newest announcement since the last look
        self.news: tuple[int, str, str | None] | None = None
        self.reread = False

    def hear(self, version: int, status: str, shown: str | None) -> None:
        if self.news is None or version > self.news[0]:
            self.news = (version, status, shown)
        self.changed.set()

    def poke(self) -> None:
        self.reread = True
        self.changed.set()


def kick_once(redis: Any, key: str, publish: Callable[[], None], ttl: int) -> Callable[[], None]:
    """A kick that publishes one message while one is due (a Redis flag under ``key``, which its
    consumer clears before its last look), not one per kick; the flag expires after ``ttl`` s in
    case the consumer died holding it."""

    def kick() -> None:
        if redis.set(key, "1", nx=True, ex=ttl):
            publish()

    return kick


class Listener:
    """One subscription per API process, waking the waiters of the checkout a message names."""

    def __init__(self, redis_url: str | None, recheck: float = 1.0, subscribed_recheck: float = 5.0):
        self.redis_url = redis_url
        self.recheck = recheck if redis_url else min(recheck, 0.25)
        self.subscribed_recheck = subscribed_recheck
        #: True while the subscription is up: no announcement can be missed
        self.subscribed = False
        self._waiters: dict[str, set[Waiter]] = {}
        self._task: asyncio.Task[None] | None = None

    def _subscription(self, up: bool) -> None:
        """The subscription started or dropped: every waiter re-reads (a message may have gone by
        while there was none) and rechecks at the pace that is safe now."""
        self.subscribed = up
        for waiting in self._waiters.values():
            for waiter in waiting:
                waiter.poke()

    async def start(self) -> None:
        if self.redis_url and self._task is None:
            self._task = asyncio.create_task(self._listen(), name="checkout-status-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        delay = 0.5
        while True:
            client = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=5)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._subscription(True)
                    delay = 0.5
                    async for message in pubsub.listen():
                        self._wake(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: waiters fall back to rechecking
                self._subscription(False)
                log.warning("changes.listener.reconnecting", error=type(exc).__name__, delay=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                self.subscribed = False
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _wake(self, data: Any) -> None:
        if isinstance(data, bytes):
            data = data.decode(errors="replace")
        checkout_id, _, rest = str(data).partition(" ")
        waiting = self._waiters.get(checkout_id)
        if not waiting:  # the common case: nobody waits on this checkout here
            return
        status, _, rest = rest.partition(" ")
        version, _, shown = rest.partition(" ")
        for waiter in waiting:
            if version.isdigit():
                waiter.hear(int(version), status, shown or None)
            else:  # a message without a version: a hint to re-read
                waiter.poke()

    @contextlib.asynccontextmanager
    async def watching(self, checkout_id: str) -> AsyncIterator[Waiter]:
        """A waiter woken when ``checkout_id`` is announced; register before reading, so that a change
        between the read and the wait is not missed."""
        waiter = Waiter()
        self._waiters.setdefault(checkout_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiting = self._waiters.get(checkout_id)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[checkout_id]

    async def wait_for_change(self, checkout_id: str, read: Callable[[], Any], status_of: Callable[[Any], str],
                              version_of: Callable[[Any], int], changed_from: str, wait: float) -> Any:
        """The checkout once its status is not ``changed_from``, or as it is when ``wait`` seconds
        have passed. ``read`` is blocking (it runs in a thread); it is called when the wait begins,
        when it ends, and when woken without a newer view to answer with."""
        from starlette.concurrency import run_in_threadpool

        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self.watching(checkout_id) as waiter:
            current = None
            while True:
                if current is None:
                    waiter.changed.clear()
                    waiter.news, waiter.reread = None, False
                    current = await run_in_threadpool(read)
                left = deadline - loop.time()
                if status_of(current) != changed_from or left <= 0:
                    return current
                every = self.subscribed_recheck if self.subscribed else self.recheck
                try:
                    await asyncio.wait_for(waiter.changed.wait(), timeout=min(left, every))
                except asyncio.TimeoutError:
                    current = None  # a recheck, or the last read
                    continue
                waiter.changed.clear()
                news, waiter.news = waiter.news, None
                if waiter.reread or news is None:
                    current = None
                elif news[0] > version_of(current):  # older news is already in what was read
                    current = json.loads(news[2]) if news[2] else None

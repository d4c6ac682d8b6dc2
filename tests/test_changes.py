"""The API's long poll over a real Redis: a waiter is answered the moment its checkout is
announced (with the announced view, without a read, when it is newer than what it read), reads
nothing more while it is subscribed and nothing happens, and falls back to rechecking when there
is no subscription."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from orchestrator.changes import Listener, redis_announcer


class Checkout:
    """What the waiter reads: a status, and how many times it was read."""

    def __init__(self) -> None:
        self.status, self.version, self.reads = "PROCESSING", 3, 0

    def read(self) -> dict[str, Any]:
        self.reads += 1
        return {"status": self.status, "version": self.version}


async def subscribed(listener: Listener) -> None:
    await listener.start()
    for _ in range(200):
        if listener.subscribed:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the listener never subscribed")


def wait(listener: Listener, checkout: Checkout, seconds: float, then: Any = None) -> tuple[dict[str, Any], float]:
    async def run() -> tuple[dict[str, Any], float]:
        if listener.redis_url:
            await subscribed(listener)
        if then is not None:
            asyncio.get_running_loop().call_later(0.3, then)
        started = time.monotonic()
        try:
            got = await listener.wait_for_change("chk_1", checkout.read, lambda v: v["status"], lambda v: v["version"],
                                                 "PROCESSING", seconds)
            return got, time.monotonic() - started
        finally:
            await listener.stop()

    return asyncio.run(run())


def announcer(real_redis: Any) -> Any:
    import redis

    return redis_announcer(redis.Redis.from_url(real_redis.url))


def test_an_announced_change_answers_at_once_with_its_view_and_no_read(real_redis):
    checkout, announce = Checkout(), announcer(real_redis)

    def change() -> None:
        checkout.status, checkout.version = "AWAITING_OTP", 4
        announce("chk_1", "AWAITING_OTP", 4, json.dumps({"status": "AWAITING_OTP", "version": 4, "shown": True}))

    got, took = wait(Listener(real_redis.url), checkout, 10.0, then=change)
    assert got == {"status": "AWAITING_OTP", "version": 4, "shown": True} and took < 2.0
    assert checkout.reads == 1  # when it began: the answer is the announced view


def test_an_announcement_older_than_the_read_is_not_an_answer(real_redis):
    """A change announced late, after the waiter read a later one: answering it would show the
    merchant an older checkout. The waiter waits on until the wait runs out."""
    checkout, announce = Checkout(), announcer(real_redis)
    stale = json.dumps({"status": "AWAITING_OTP", "version": 2})
    got, took = wait(Listener(real_redis.url), checkout, 1.5, then=lambda: announce("chk_1", "AWAITING_OTP", 2, stale))
    assert got == {"status": "PROCESSING", "version": 3} and took >= 1.4
    assert checkout.reads == 2  # when it began and when its wait ran out


def test_an_announcement_without_a_view_has_the_waiter_read(real_redis):
    checkout, announce = Checkout(), announcer(real_redis)

    def change() -> None:
        checkout.status, checkout.version = "FAILED", 4
        announce("chk_1", "FAILED", 4, None)

    got, took = wait(Listener(real_redis.url), checkout, 10.0, then=change)
    assert got == {"status": "FAILED", "version": 4} and took < 2.0 and checkout.reads == 2


def test_a_subscribed_waiter_reads_nothing_more_while_nothing_happens(real_redis):
    checkout, announce = Checkout(), announcer(real_redis)
    got, took = wait(Listener(real_redis.url), checkout, 3.0, then=lambda: announce("chk_2", "FAILED", 9, None))
    assert got["status"] == "PROCESSING" and took >= 2.9
    assert checkout.reads == 2  # when it began and when its wait ran out; another checkout's news woke nothing


def test_without_a_subscription_a_waiter_rechecks(real_redis):
    checkout = Checkout()
    got, _ = wait(Listener(None), checkout, 1.0, then=lambda: setattr(checkout, "status", "FAILED"))
    assert got["status"] == "FAILED" and checkout.reads >= 2


def test_when_the_subscription_drops_waiters_read_again_and_recheck(real_redis):
    """Messages published while nobody is subscribed are gone: the waiters re-read at once, and
    keep rechecking until the subscription is back."""
    checkout = Checkout()
    got, _ = wait(Listener(real_redis.url), checkout, 3.0, then=real_redis.stop)
    assert got["status"] == "PROCESSING"
    assert checkout.reads >= 4  # began, woken by the drop, rechecked each second, ran out

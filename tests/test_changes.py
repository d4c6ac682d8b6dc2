"""The API's long poll over a real Redis: a waiter is answered the moment its checkout is
announced, reads nothing more while it is subscribed and nothing happens, and falls back to
rechecking when there is no subscription."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from orchestrator.changes import Listener, redis_announcer


class Checkout:
    """What the waiter reads: a status, and how many times it was read."""

    def __init__(self) -> None:
        self.status, self.reads = "PROCESSING", 0

    def read(self) -> dict[str, Any]:
        self.reads += 1
        return {"status": self.status}


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
            got = await listener.wait_for_change("chk_1", checkout.read, lambda v: v["status"], "PROCESSING",
                                                 seconds)
            return got, time.monotonic() - started
        finally:
            await listener.stop()

    return asyncio.run(run())


def test_an_announced_change_answers_at_once(real_redis):
    import redis

    checkout = Checkout()
    announce = redis_announcer(redis.Redis.from_url(real_redis.url))

    def change() -> None:
        checkout.status = "AWAITING_OTP"
        announce("chk_1", "AWAITING_OTP")

    got, took = wait(Listener(real_redis.url), checkout, 10.0, then=change)
    assert got["status"] == "AWAITING_OTP" and took < 2.0


def test_a_subscribed_waiter_reads_nothing_more_while_nothing_happens(real_redis):
    import redis

    checkout = Checkout()
    announce = redis_announcer(redis.Redis.from_url(real_redis.url))
    got, took = wait(Listener(real_redis.url), checkout, 3.0, then=lambda: announce("chk_2", "FAILED"))
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

"""The API's long poll over a real Redis: a waiter is answered the moment its checkout is
announced (with the announced view, without a read, when it is newer than what it read), reads
nothing more while it is subscribed and nothing happens, and falls back to rechecking when there
is no subscription."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from orchestrator.outbound.changes import Listener, redis_announcer


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


# --- the long poll under interleavings ------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

STATUSES = ["PROCESSING", "AWAITING_OTP", "AUTHORIZED", "COMPLETED"]


@st.composite
def histories(draw: Any) -> tuple[list[str], int, list[tuple[str, int]]]:
    """Committed statuses (version i has ``statuses[i]``; each differs from the one before), how
    many were committed before the waiter began, and what happens after: commits and
    announcements (of any committed version, late ones included, some never), interleaved."""
    count = draw(st.integers(2, 6))
    statuses = [STATUSES[0]]
    for _ in range(count - 1):
        statuses.append(draw(st.sampled_from([s for s in STATUSES if s != statuses[-1]])))
    before = draw(st.integers(0, count - 1))
    committed, actions = before, []
    unheard = list(range(1, before + 1))
    while committed < count - 1 or unheard:
        choices = (["commit"] if committed < count - 1 else []) + (["announce"] if unheard else [])
        choice = draw(st.sampled_from(choices))
        if choice == "commit":
            committed += 1
            unheard.append(committed)
            actions.append(("commit", committed))
        else:
            version = draw(st.sampled_from(unheard))
            unheard.remove(version)
            if draw(st.booleans()) or version == count - 1:  # a lost announcement, now and then
                actions.append(("announce", version))
        actions.append(("pause", draw(st.integers(0, 2))))
    return statuses, before, actions


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_a_long_poll_never_answers_older_than_it_read_and_answers_the_last_change_announced(history):
    """Whatever the order of commits, reads and announcements (late, reordered, lost): the answer
    is never older than what the waiter first read, it is a change unless the wait ran out, and
    once the last change is announced the waiter has answered with a change."""
    statuses, before, actions = history
    views = [{"status": s, "version": v} for v, s in enumerate(statuses)]
    db = {"version": before}
    changed_from = statuses[before]

    async def run() -> tuple[dict[str, Any], float]:
        listener = Listener(None, subscribed_recheck=30.0)
        listener.subscribed = True  # as if subscribed: only announcements wake a waiter
        loop = asyncio.get_running_loop()
        started = loop.time()
        waiting = asyncio.create_task(listener.wait_for_change(
            "chk_1", lambda: dict(views[db["version"]]), lambda v: v["status"], lambda v: v["version"],
            changed_from, 0.3))
        await asyncio.sleep(0)  # registered before anything else happens
        for kind, value in actions:
            if kind == "commit":
                db["version"] = value
            elif kind == "announce":
                listener._wake(f"chk_1 {statuses[value]} {value} {json.dumps(views[value])}".encode())
            else:
                for _ in range(value):
                    await asyncio.sleep(0.002)
        got = await waiting
        return got, loop.time() - started

    got, took = asyncio.run(run())
    assert got in views and got["version"] >= before
    if got["status"] == changed_from:
        assert took >= 0.29  # only when the wait ran out
    if statuses[-1] != changed_from:
        assert got["status"] != changed_from and took < 0.29  # the last change was announced

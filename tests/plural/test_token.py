import time

import fakeredis

import pytest

from orchestrator.plural.token import AccessToken, MemoryTokenStore, RedisTokenStore, TokenManager
from tests.conftest import at_once

KEY = "c2FuZGJveC1jYXJkLWtleS1ub3QtZm9yLXByb2QhISE="  # the sandbox's CARD_ENCRYPTION_KEY


def counting_fetch(lifetime=3600.0, delay=0.0):
    calls = []

    def fetch():
        if delay:
            time.sleep(delay)
        calls.append(1)
        now = time.time()
        return AccessToken(f"t{len(calls)}", now + lifetime, now)

    return fetch, calls


def test_fresh_token_respects_the_margin():
    tok = AccessToken("t", expires_at=1000.0, issued_at=0.0)
    assert tok.fresh(600, margin=300)
    assert not tok.fresh(701, margin=300)


def test_margin_never_exceeds_half_the_lifetime():
    tok = AccessToken("t", expires_at=60.0, issued_at=0.0)
    assert tok.fresh(29, margin=300)
    assert not tok.fresh(31, margin=300)


def test_token_near_expiry_is_refreshed():
    fetch, calls = counting_fetch()
    clock = [0.0]
    store = MemoryTokenStore()
    store.save(AccessToken("old", expires_at=1000.0, issued_at=0.0))
    manager = TokenManager(store, fetch, margin=300, clock=lambda: clock[0])
    clock[0] = 500
    assert manager.get() == "old"
    clock[0] = 800
    assert manager.get() == "t1" and len(calls) == 1


def test_token_is_shared_between_processes_through_redis():
    server = fakeredis.FakeServer()
    fetch, calls = counting_fetch()
    a = TokenManager(RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY), fetch)
    b = TokenManager(RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY), fetch)
    assert a.get() == b.get() == "t1"
    assert len(calls) == 1


def test_concurrent_refreshers_fetch_only_once():
    server = fakeredis.FakeServer()
    fetch, calls = counting_fetch(delay=0.05)
    results = at_once(lambda: TokenManager(RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY), fetch).get(), 8)
    assert len(calls) == 1 and results == ["t1"] * 8


def test_invalidate_drops_only_the_refused_token():
    server = fakeredis.FakeServer()
    store = RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY)
    store.save(AccessToken("new", time.time() + 100, time.time()))
    store.discard("old")
    assert store.load().value == "new"
    store.discard("new")
    assert store.load() is None


def test_redis_entry_expires_with_the_token():
    r = fakeredis.FakeRedis()
    RedisTokenStore(r, "cid", KEY).save(AccessToken("t", time.time() + 120, time.time()))
    key = next(iter(r.keys("plural:token:*")))
    assert 100 < r.ttl(key) <= 120


class CountingStore(MemoryTokenStore):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self):
        self.loads += 1
        return super().load()


def test_a_fresh_token_is_kept_in_process_not_read_from_the_store_each_call():
    fetch, calls = counting_fetch()
    store = CountingStore()
    manager = TokenManager(store, fetch)
    assert [manager.get() for _ in range(50)] == ["t1"] * 50
    assert len(calls) == 1 and store.loads <= 2


def test_a_refused_token_is_forgotten_in_process_and_the_store_is_asked_again():
    fetch, calls = counting_fetch()
    store = CountingStore()
    manager = TokenManager(store, fetch)
    manager.get()
    store.save(AccessToken("elsewhere", time.time() + 3600, time.time()))  # another process refreshed
    assert manager.get() == "t1"  # still fresh here: no store read
    manager.invalidate("t1")
    assert manager.get() == "elsewhere" and len(calls) == 1


def test_the_cached_token_is_refreshed_near_its_expiry():
    fetch, calls = counting_fetch(lifetime=1000)
    clock = [time.time()]
    manager = TokenManager(MemoryTokenStore(), fetch, margin=300, clock=lambda: clock[0])
    assert manager.get() == "t1"
    clock[0] += 800
    assert manager.get() == "t2" and len(calls) == 2


def test_a_token_within_its_margin_is_used_while_another_process_holds_the_refresh_lock():
    """The holder may be slow, or dead (its lock lasts until its timeout): the token still works,
    so nobody waits for it."""
    server = fakeredis.FakeServer()
    fetch, calls = counting_fetch()
    store = RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY, lock_timeout=30)
    store.save(AccessToken("old", time.time() + 100, time.time() - 3500))  # within the 300 s margin
    holder = RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY, lock_timeout=30)
    with holder.lock() as took:
        assert took
        started = time.monotonic()
        assert TokenManager(store, fetch, margin=300).get() == "old"
        assert time.monotonic() - started < 1.0 and calls == []
    assert TokenManager(store, fetch, margin=300).get() == "t1"  # the lock is free: refreshed


def test_an_expired_token_waits_for_the_refresh_lock_of_a_holder_that_died():
    server = fakeredis.FakeServer()
    fetch, calls = counting_fetch()
    store = RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY, lock_timeout=1)
    store.save(AccessToken("old", time.time() - 1, time.time() - 3600))
    dead = fakeredis.FakeRedis(server=server).lock(store._lock_key, timeout=1)
    assert dead.acquire(blocking=False)  # and never released: it lapses after 1 s
    started = time.monotonic()
    assert TokenManager(store, fetch).get() == "t1"
    assert 0.5 < time.monotonic() - started < 5 and len(calls) == 1


def test_a_memory_store_lock_taken_elsewhere_is_not_waited_for_when_asked_not_to():
    store = MemoryTokenStore()
    with store.lock() as took, store.lock(wait=False) as second:
        assert took and not second


def test_the_token_is_held_in_redis_encrypted_and_read_back():
    r = fakeredis.FakeRedis()
    store = RedisTokenStore(r, "cid", KEY)
    store.save(AccessToken("secret-token-value", time.time() + 120, time.time()))
    raw = r.get(next(iter(r.keys("plural:token:*"))))
    assert b"secret-token-value" not in raw and b"access_token" not in raw
    assert store.load().value == "secret-token-value"


def test_a_clear_or_foreign_entry_counts_as_no_token():
    from cryptography.fernet import Fernet

    r = fakeredis.FakeRedis()
    store = RedisTokenStore(r, "cid", KEY)
    r.set(store._key, AccessToken("clear", time.time() + 120, time.time()).to_json())  # from before
    assert store.load() is None
    RedisTokenStore(r, "cid", Fernet.generate_key()).save(AccessToken("other", time.time() + 120, time.time()))
    assert store.load() is None


def test_a_refresh_lock_not_taken_in_time_is_a_transient_error_steps_back_off_from():
    from orchestrator.plural import errors
    from orchestrator.saga.deps import TRANSIENT

    server = fakeredis.FakeServer()
    fetch, calls = counting_fetch()
    store = RedisTokenStore(fakeredis.FakeRedis(server=server), "cid", KEY, lock_timeout=0.3)
    held = fakeredis.FakeRedis(server=server).lock(store._lock_key, timeout=30)
    assert held.acquire(blocking=False)  # a slow holder: longer than this store waits
    with pytest.raises(TRANSIENT) as raised:
        TokenManager(store, fetch).get()  # no token at all: it must wait for the lock
    assert isinstance(raised.value, errors.TokenLockTimeout) and not raised.value.may_have_reached_plural
    assert calls == []

"""The access token: cached, shared between processes, refreshed by one process at a time.

``TokenManager.get()`` answers from the store while the token is fresh (its expiry minus a
margin); otherwise it takes the store's lock, looks again (another process may just have
refreshed), and only then fetches a new token. While the token is within its margin but not yet
expired, a process that finds the lock taken does not wait for it: it uses the token it has and
leaves the refresh to the holder (so a holder that died, or a slow token call, stalls nobody until
the token really expires). ``invalidate(value)`` drops a token that Plural refused with 401,
unless another process has already replaced it.

In Redis the token is held encrypted, like the vault's card data (Fernet, ``CARD_ENCRYPTION_KEY``);
an entry that does not decrypt (another key, an old clear one) counts as no token. A refresh lock
that cannot be taken in time raises ``errors.TokenLockTimeout``, a transient error.

A token call that Plural refuses (``errors.CredentialsRejected``: a rotated or mistyped secret)
sets the store's "credentials rejected since T" flag, shared by every process; the first token
fetched afterwards clears it. ``rejected_since()`` reads it (status, metrics, the console).
For ``refusal_cooldown`` seconds after a refusal this process does not ask again (every waiting
step would, otherwise): it raises the same refusal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Protocol

from cryptography.fernet import Fernet, InvalidToken

from orchestrator.plural.errors import CredentialsRejected, TokenLockTimeout


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float
    issued_at: float

    def fresh(self, now: float, margin: float) -> bool:
        # never let the margin eat more than half the token's life, or a short-lived token
        # would be refreshed on every call
        effective = min(margin, (self.expires_at - self.issued_at) / 2)
        return now < self.expires_at - effective

    def to_json(self) -> str:
        return json.dumps({"access_token": self.value, "expires_at": self.expires_at, "issued_at": self.issued_at})

    @classmethod
    def from_json(cls, raw: str | bytes) -> "AccessToken":
        data = json.loads(raw)
        return cls(value=data["access_token"], expires_at=float(data["expires_at"]), issued_at=float(data["issued_at"]))


class TokenStore(Protocol):
    def load(self) -> AccessToken | None: ...

    def save(self, token: AccessToken) -> None: ...

    def discard(self, value: str) -> None: ...

    def lock(self, wait: bool = True) -> ContextManager[bool]:
        """The refresh lock, held for the block; it yields whether it was taken (always, when
        ``wait``: a lock never taken raises ``TokenLockTimeout``)."""
        ...

    def mark_rejected(self, now: float) -> float:
        """Credentials refused at ``now``: set the flag unless it is set; answer since when."""
        ...

    def clear_rejected(self) -> None: ...

    def rejected_since(self) -> float | None: ...


class MemoryTokenStore:
    """Process-local store, for tools and tests that have no Redis."""

    def __init__(self) -> None:
        self._token: AccessToken | None = None
        self._lock = threading.Lock()
        self._rejected: float | None = None

    def mark_rejected(self, now: float) -> float:
        if self._rejected is None:
            self._rejected = now
        return self._rejected

    def clear_rejected(self) -> None:
        self._rejected = None

    def rejected_since(self) -> float | None:
        return self._rejected

    def load(self) -> AccessToken | None:
        return self._token

    def save(self, token: AccessToken) -> None:
        self._token = token

    def discard(self, value: str) -> None:
        if self._token is not None and self._token.value == value:
            self._token = None

    @contextlib.contextmanager
    def lock(self, wait: bool = True) -> Iterator[bool]:
        took = self._lock.acquire(blocking=wait)
        try:
            yield took
        finally:
            if took:
                self._lock.release()


class RedisTokenStore:
    """Token shared through Redis by every worker, API and beat process of one client id, encrypted
    with ``key`` (a Fernet key: ``CARD_ENCRYPTION_KEY``)."""

    def __init__(self, redis: Any, client_id: str, key: str | bytes, *, lock_timeout: float = 30.0,
                 prefix: str = "plural:token"):
        suffix = hashlib.sha256(client_id.encode()).hexdigest()[:16]
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        self._redis = redis
        self._key = f"{prefix}:{suffix}"
        self._lock_key = f"{prefix}:{suffix}:lock"
        self._rejected_key = f"{prefix}:{suffix}:rejected"
        self._lock_timeout = lock_timeout

    def mark_rejected(self, now: float) -> float:
        self._redis.set(self._rejected_key, repr(now), nx=True)
        return self.rejected_since() or now

    def clear_rejected(self) -> None:
        self._redis.delete(self._rejected_key)

    def rejected_since(self) -> float | None:
        raw = self._redis.get(self._rejected_key)
        try:
            return float(raw) if raw else None
        except ValueError:
            return None

    def _decode(self, raw: bytes | str | None) -> AccessToken | None:
        if not raw:
            return None
        try:
            return AccessToken.from_json(self._fernet.decrypt(raw))
        except InvalidToken:  # another key, or a clear entry from before: fetch a new one
            return None

    def load(self) -> AccessToken | None:
        return self._decode(self._redis.get(self._key))

    def save(self, token: AccessToken) -> None:
        ttl = max(int(token.expires_at - time.time()), 1)
        self._redis.set(self._key, self._fernet.encrypt(token.to_json().encode()), ex=ttl)

    def discard(self, value: str) -> None:
        with self._redis.pipeline() as pipe:
            try:
                pipe.watch(self._key)
                held = self._decode(pipe.get(self._key))
                if held is not None and held.value == value:
                    pipe.multi()
                    pipe.delete(self._key)
                    pipe.execute()
                else:
                    pipe.unwatch()
            except Exception as exc:  # WatchError: someone replaced it meanwhile, which is what we want
                if type(exc).__name__ != "WatchError":
                    raise

    @contextlib.contextmanager
    def lock(self, wait: bool = True) -> Iterator[bool]:
        # wait a little longer than a lock lasts: a holder that died gives it up by then
        lock = self._redis.lock(self._lock_key, timeout=self._lock_timeout, blocking_timeout=self._lock_timeout + 1)
        took = bool(lock.acquire(blocking=wait))
        if not took and wait:
            raise TokenLockTimeout("could not take the token refresh lock")
        try:
            yield took
        finally:
            if took:
                with contextlib.suppress(Exception):
                    lock.release()


class TokenManager:
    def __init__(
        self,
        store: TokenStore,
        fetch: Callable[[], AccessToken],
        *,
        margin: float = 300.0,
        clock: Callable[[], float] = time.time,
        refusal_cooldown: float = 2.0,
    ):
        self._store = store
        self._fetch = fetch
        self._margin = margin
        self._clock = clock
        self._refusal_cooldown = refusal_cooldown
        #: this process's last refusal and when it came (the cooldown)
        self._refused: tuple[float, CredentialsRejected] | None = None
        # this process's copy: the store (Redis) stays the shared source and the refresh lock, but
        # a fresh token is not read from it on every call
        self._cached: AccessToken | None = None

    def get(self) -> str:
        cached = self._cached
        if cached is not None and cached.fresh(self._clock(), self._margin):
            return cached.value
        token = self._store.load()
        if token is None or not token.fresh(self._clock(), self._margin):
            usable = token if token is not None and token.fresh(self._clock(), 0.0) else None
            refused = self._refused
            if usable is None and refused is not None and self._clock() - refused[0] < self._refusal_cooldown:
                raise refused[1]
            with self._store.lock(wait=usable is None) as took:
                if not took:  # another process is refreshing, and this token still works meanwhile
                    assert usable is not None
                    return usable.value
                token = self._store.load()
                if token is None or not token.fresh(self._clock(), self._margin):
                    try:
                        token = self._fetch()
                    except CredentialsRejected as exc:
                        exc.since = self._store.mark_rejected(self._clock())
                        self._refused = (self._clock(), exc)
                        raise
                    self._refused = None
                    self._store.save(token)
                    self._store.clear_rejected()
        self._cached = token
        return token.value

    def status(self) -> str:
        """For readiness: ``ok`` while a fresh token is held (here or in the store), ``expired`` or
        ``none`` otherwise; never calls Plural (beat refreshes the token every minute)."""
        token = self._cached if self._cached is not None else self._store.load()
        if token is None:
            return "none"
        return "ok" if token.fresh(self._clock(), 0.0) else "expired"

    def rejected_since(self) -> float | None:
        """Since when Plural has refused our client credentials (epoch seconds), or None."""
        return self._store.rejected_since()

    def invalidate(self, value: str) -> None:
        """Plural refused ``value`` (a 401): forget it here and in the store."""
        if self._cached is not None and self._cached.value == value:
            self._cached = None
        self._store.discard(value)

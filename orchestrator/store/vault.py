"""Short-lived secrets (card data, OTPs) held encrypted in Redis, never in a queue, never in clear.

Values are Fernet-encrypted with ``CARD_ENCRYPTION_KEY`` and stored with a TTL; the payment step
reads the card and deletes it once the payment exists. A message on the queue carries only the
checkout id.

An OTP is kept per submission: each submission writes its own entry (under a fresh ``ref``, in
the checkout's hash of OTPs) before it tries the AWAITING_OTP → VERIFYING_OTP move, and the move
it wins carries that ``ref`` (``Checkout.otp_ref``), so the submit step reads exactly the OTP that
won. A submission that lost the move deletes only its own entry; none can overwrite another's.

While Redis is away a new checkout's card is sealed instead (``seal_card``: the same encryption,
the same key) and held in its checkout row; the checkout's first step, which runs once Redis is
back, moves it into the vault and clears the row (``orchestrator.saga.runner.unseal_card``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


@dataclass(frozen=True)
class CardData:
    number: str
    name: str | None = None
    cvv: str | None = None           # optional for Debit EMI, as in Plural's samples
    expiry_month: str | None = None
    expiry_year: str | None = None
    registered_mobile_number: str | None = None  # Debit EMI: the mobile registered with the bank

    def __repr__(self) -> str:  # never print a card
        return f"CardData(****{self.number[-4:]})"

    __str__ = __repr__


class VaultError(RuntimeError):
    pass


class Vault:
    def __init__(self, redis: Any, key: str, prefix: str = "vault"):
        try:
            self._fernet = Fernet(key.encode() if isinstance(key, str) else key)
        except (ValueError, TypeError):
            raise VaultError("CARD_ENCRYPTION_KEY must be a Fernet key (urlsafe base64 of 32 bytes)") from None
        self._redis = redis
        self._prefix = prefix

    def _key(self, kind: str, checkout_id: str) -> str:
        return f"{self._prefix}:{kind}:{checkout_id}"

    def _put(self, kind: str, checkout_id: str, data: dict[str, Any], ttl: int, *, only_new: bool = False) -> bool:
        token = self._fernet.encrypt(json.dumps(data).encode())
        return bool(self._redis.set(self._key(kind, checkout_id), token, ex=ttl, nx=only_new))

    def _get(self, kind: str, checkout_id: str) -> dict[str, Any] | None:
        raw = self._redis.get(self._key(kind, checkout_id))
        if raw is None:
            return None
        try:
            return json.loads(self._fernet.decrypt(raw))
        except InvalidToken:
            raise VaultError(f"{kind} for {checkout_id} does not decrypt with the configured key") from None

    def put_card(self, checkout_id: str, card: CardData, ttl: int) -> bool:
        return self._put("card", checkout_id, asdict(card), ttl, only_new=True)

    def seal_card(self, card: CardData) -> str:
        """The card encrypted with the vault's key, for a checkout row to hold while Redis is away."""
        return self._fernet.encrypt(json.dumps(asdict(card)).encode()).decode()

    def unseal_card(self, sealed: str) -> CardData:
        try:
            return CardData(**json.loads(self._fernet.decrypt(sealed.encode())))
        except InvalidToken:
            raise VaultError("a sealed card does not decrypt with the configured key") from None

    def card(self, checkout_id: str) -> CardData | None:
        data = self._get("card", checkout_id)
        return CardData(**data) if data else None

    def drop_card(self, checkout_id: str) -> None:
        self._redis.delete(self._key("card", checkout_id))

    def put_otp(self, checkout_id: str, otp: str, ttl: int) -> str:
        """Keep one submission's OTP under a fresh ref (never over another's); returns the ref."""
        ref = uuid.uuid4().hex
        key = self._key("otps", checkout_id)
        token = self._fernet.encrypt(json.dumps({"otp": otp}).encode())
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, ref, token)
            pipe.expire(key, ttl)
            written, _ = pipe.execute()
        if not written:  # a fresh ref is never taken: never write over one that is
            raise VaultError(f"OTP ref for {checkout_id} already taken")
        return ref

    def otp(self, checkout_id: str, ref: str | None) -> str | None:
        """The OTP the submission ``ref`` kept, or None (expired, used, or no ref)."""
        if ref is None:
            return None
        raw = self._redis.hget(self._key("otps", checkout_id), ref)
        if raw is None:
            return None
        try:
            return json.loads(self._fernet.decrypt(raw))["otp"]
        except InvalidToken:
            raise VaultError(f"otp for {checkout_id} does not decrypt with the configured key") from None

    def drop_otp(self, checkout_id: str, ref: str | None) -> None:
        """Drop the OTP of the submission ``ref`` only."""
        if ref is not None:
            self._redis.hdel(self._key("otps", checkout_id), ref)

    def drop(self, checkout_id: str) -> None:
        """Drop the card and every OTP kept for the checkout (one round trip)."""
        self._redis.delete(self._key("card", checkout_id), self._key("otps", checkout_id))

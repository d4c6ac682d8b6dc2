"""The sandbox's signatures, Plural's side of them, written from Plural's documents (not from the
orchestrator's verifier: a mistake shared by both sides would go unseen).

Return URL (Card Native OTP document, "4.2 Verify Payment Signature"): the fields posted to the
return URL, ``signature`` aside, as ``key=value`` pairs in ascending order of key, joined by
``&``; HMAC-SHA256 over its UTF-8 bytes, keyed with the secret key's hex-decoded bytes (the
document's ``GenerateHash`` turns each pair of hex digits into a byte); the digest as upper-case hex.

Webhooks (Standard Webhooks, as the notes describe Plural's): the signed content is
``"{webhook-id}.{webhook-timestamp}.{raw body}"``, HMAC-SHA256 keyed with the raw bytes of the
merchant's secret, base64; the header is ``v1,<base64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Mapping


def secret_from_hex(secret: str) -> bytes:
    """The callback key as the document's ``GenerateHash`` builds it: a byte per pair of hex digits."""
    if len(secret) % 2:
        raise ValueError("a hex secret has an even number of digits")
    return bytes(int(secret[i:i + 2], 16) for i in range(0, len(secret), 2))


def callback_string(fields: Mapping[str, str]) -> str:
    """The request string: every pair but the signature, keys in ascending order, ``&`` between."""
    pairs = sorted((key, value) for key, value in fields.items() if key != "signature")
    return "&".join(f"{key}={value}" for key, value in pairs)


def callback_signature(fields: Mapping[str, str], key: bytes) -> str:
    """The ``signature`` the return URL carries; ``key`` is the secret's decoded bytes."""
    mac = hmac.new(key, callback_string(fields).encode("utf-8"), hashlib.sha256)
    return "".join(f"{byte:02X}" for byte in mac.digest())


def webhook_signature(key: bytes, webhook_id: str, timestamp: int, body: str | bytes) -> str:
    """The ``webhook-signature`` header of one delivery: ``v1,`` and the base64 HMAC."""
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    content = b".".join((webhook_id.encode("utf-8"), str(timestamp).encode("ascii"), raw))
    return "v1," + base64.b64encode(hmac.digest(key, content, "sha256")).decode("ascii")


def webhook_headers(key: bytes, webhook_id: str, timestamp: int, body: str | bytes) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": webhook_signature(key, webhook_id, timestamp, body)}

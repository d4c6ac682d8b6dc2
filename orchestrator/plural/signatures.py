"""Plural's two signatures.

Return URL (callback): the fields that arrived, all but ``signature``, sorted by key and joined as
``key=value&…``, HMAC-SHA256 keyed with the hex-decoded secret, upper-case hex.

Webhooks: the Standard Webhooks scheme (``standardwebhooks``), keyed with the raw bytes of the
merchant's secret, over ``"{webhook-id}.{webhook-timestamp}.{raw body}"``; timestamps more than
300 s away are refused.
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import hmac
from typing import Mapping

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class SignatureError(ValueError):
    """A signature that is missing, malformed, stale or wrong."""


def callback_message(fields: Mapping[str, str]) -> str:
    return "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature")


def sign_callback(fields: Mapping[str, str], key: bytes) -> str:
    return hmac.new(key, callback_message(fields).encode(), hashlib.sha256).hexdigest().upper()


def verify_callback(fields: Mapping[str, str], key: bytes) -> None:
    """Raise ``SignatureError`` unless ``fields['signature']`` signs the other fields."""
    given = fields.get("signature")
    if not given:
        raise SignatureError("callback carries no signature")
    if not given.isascii() or not hmac.compare_digest(sign_callback(fields, key), given.upper()):
        raise SignatureError("callback signature does not match its fields")


def sign_webhook(key: bytes, msg_id: str, timestamp: int, body: bytes | str) -> str:
    data = body.decode() if isinstance(body, bytes) else body
    return Webhook(key).sign(msg_id, dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc), data)


def webhook_headers(key: bytes, msg_id: str, timestamp: int, body: bytes | str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(key, msg_id, timestamp, body),
    }


def verify_webhook(key: bytes, body: bytes, headers: Mapping[str, str]) -> None:
    """Raise ``SignatureError`` unless the headers sign ``body`` within 300 s of now."""
    try:
        Webhook(key).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise SignatureError(str(exc) or "webhook signature rejected") from None

"""Plural's two signatures.

Return URL (callback): the fields that arrived, all but ``signature``, sorted by key and joined as
``key=value&…``, HMAC-SHA256 keyed with the hex-decoded secret, upper-case hex.

Webhooks: the Standard Webhooks scheme (``standardwebhooks``), keyed with the raw bytes of the
merchant's secret, over ``"{webhook-id}.{webhook-timestamp}.{raw body}"``. ``verify_webhook``
also refuses timestamps more than 300 s away; ``verify_webhook_signature`` checks the signature
alone and returns the timestamp, for a receiver that keeps a late retry (Plural retries for hours
and its ``webhook-timestamp`` may be the event's original time) but does not believe it.
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


#: seconds a webhook's timestamp may be away from now and still be trusted as a fact
WEBHOOK_TOLERANCE = 300


def verify_webhook_signature(key: bytes, body: bytes, headers: Mapping[str, str]) -> int:
    """The delivery's ``webhook-timestamp`` if one of its signatures signs ``id.timestamp.body``
    with ``key``, whatever the timestamp's age; ``SignatureError`` otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, given = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not msg_id or not stamp or not given:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("webhook-timestamp is not a unix time")
    try:
        expected = sign_webhook(key, msg_id, int(stamp), body).split(",", 1)[1]
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        raise SignatureError("webhook cannot be signed as given") from None
    for item in given.split(" "):
        version, _, value = item.partition(",")
        if version == "v1" and value.isascii() and hmac.compare_digest(value, expected):
            return int(stamp)
    raise SignatureError("no matching webhook signature")


def verify_webhook(key: bytes, body: bytes, headers: Mapping[str, str]) -> None:
    """Raise ``SignatureError`` unless the headers sign ``body`` within 300 s of now."""
    try:
        Webhook(key).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise SignatureError(str(exc) or "webhook signature rejected") from None

"""Retry decisions: small pure functions, each with its own tests.

A request is retried only when doing it again cannot charge, capture or refund twice:

- it never reached Plural (connection refused, DNS, connect timeout): always;
- otherwise only if it is *replay-safe*: a GET, a read-only POST (card details, offers, token),
  or a POST/PUT that carries a merchant reference Plural de-duplicates on (order, payment,
  capture, refund);
- and the failure is transient: no answer (timeout), 5xx, or 429.

A 4xx business error is never retried. Backoff is exponential with full jitter and honours
``Retry-After``.
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Callable

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def should_retry(
    *,
    attempt: int,
    max_attempts: int,
    replay_safe: bool,
    status: int | None = None,
    sent: bool = True,
) -> bool:
    """Retry after ``attempt`` (1-based) failed?

    ``status`` is the HTTP status of an answer, or None when there was none; ``sent`` is False
    when the request provably never left (a connection failure).
    """
    if attempt >= max_attempts:
        return False
    if status is None and not sent:
        return True
    if not replay_safe:
        # 429 is refused before any work is done: safe to repeat even when not replay-safe
        return status == 429
    if status is None:
        return True
    return status in TRANSIENT_STATUSES


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter over ``base·2^(attempt-1)``, capped.

    A server's ``Retry-After`` wins when it asks for longer (still capped at 4× ``cap``).
    """
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = ceiling * rand()
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, cap * 4)
    return max(delay, 0.0)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date. None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed is None:
        return None
    current = time.time() if now is None else now
    return max(parsed.timestamp() - current, 0.0)

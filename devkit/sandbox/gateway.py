"""The sandbox gateway's business rules, in memory: Plural UAT as faithfully as its documents allow.

HTTP lives in ``devkit.sandbox.app`` (and its ``routes``); the gateway only takes parsed JSON and returns
JSON-shaped dicts, or raises ``GatewayError`` with Plural's error body and HTTP status.

Statuses follow Plural: an order is ``CREATED``, ``PENDING`` once a payment is made, then
``AUTHORIZED`` (pre-auth) or ``PROCESSED``; capture (full → ``PROCESSED``, partial →
``PARTIALLY_CAPTURED``) only from ``AUTHORIZED``; cancel; refunds of captured orders; a failed
payment leaves the order ``ATTEMPTED`` while retries remain, ``FAILED`` after (and at once when
the OTP attempts are exhausted); a payment's expiry is checked on every path that could
authorize it (OTP submit, the bank page), answered ``PAYMENT_EXPIRED``. Every money
movement is written to the ledger.
"""

from __future__ import annotations

from devkit.sandbox.acs import Acs
from devkit.sandbox.affordability import Affordability
from devkit.sandbox.orders import Orders
from devkit.sandbox.otp import Otp
from devkit.sandbox.payments import Payments
from devkit.sandbox.refunds import Refunds
from devkit.sandbox.state import SEED_SAMPLE_TOKEN, GatewayError, Ledger, PaymentState, SandboxConfig
from devkit.sandbox.tokens import Tokens

__all__ = ["SEED_SAMPLE_TOKEN", "Gateway", "GatewayError", "PaymentState", "SandboxConfig"]


class Gateway(Tokens, Orders, Payments, Otp, Acs, Refunds, Affordability, Ledger):
    """Plural UAT in memory, one resource per module (``state``: what they share)."""

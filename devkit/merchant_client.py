"""A small helper for e-commerce backends: enqueue and query checkouts over the merchant API.

It needs only ``requests`` (and ``standardwebhooks`` to verify events) and imports none of the
worker code::

    from devkit.merchant_client import OrchestratorClient
    api = OrchestratorClient("http://127.0.0.1:8000", api_key="...")
    checkout = api.create_checkout(amount=110000, card={...}, merchant_order_reference="order-42")
    checkout = api.wait(checkout["id"], until={"AWAITING_OTP", "AWAITING_REDIRECT", "FAILED"})
    api.submit_otp(checkout["id"], "123456")

    # the shop's event receiver (MERCHANT_WEBHOOK_URL points at it)
    event = OrchestratorClient.verify_event(MERCHANT_WEBHOOK_SECRET, request.headers, request.body)
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterable, Mapping
from urllib.parse import urlencode

import requests
import requests.adapters

FINAL_STATUSES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "AUTHORIZED"})


class OrchestratorError(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(f"{status} {body.get('code')}: {body.get('message')}")
        self.status = status
        self.code = body.get("code")
        self.body = body


class EventRejected(ValueError):
    """An event whose signature does not hold (not from this orchestrator, altered, or replayed late)."""


class OrchestratorClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 10.0, session: requests.Session | None = None,
                 retries: int = 4, backoff: float = 0.25, connections: int = 64):
        """``connections``: keep-alive connections kept for threads sharing this client."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries, self.backoff = retries, backoff
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=connections)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self.session.headers["X-API-Key"] = api_key

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One logical call. Every POST carries an ``Idempotency-Key`` kept across its retries, so a
        retry after a lost answer gets the first answer, never a second checkout or refund; a
        reset connection or a 503 is retried with backoff."""
        headers = {"Idempotency-Key": uuid.uuid4().hex} if method == "POST" else {}
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self.session.request(method, self.base_url + path, json=body, timeout=self.timeout,
                                              headers=headers)
            except (requests.ConnectionError, requests.Timeout):
                if attempt > self.retries:
                    raise
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            retryable = answer.status_code == 503 or (answer.status_code == 409 and answer.content
                                                      and answer.json().get("code") == "IDEMPOTENCY_IN_PROGRESS")
            if retryable and attempt <= self.retries:
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            data = answer.json() if answer.content else {}
            if answer.status_code >= 400:
                raise OrchestratorError(answer.status_code, data)
            return data

    def create_checkout(self, *, amount: int, card: dict[str, str], currency: str = "INR", pre_auth: bool = False,
                        merchant_order_reference: str | None = None, payment_method: str = "CARD",
                        **extra: Any) -> dict[str, Any]:
        """``extra``: ``emi`` ({issuer_id, tenure_id, expected_monthly_emi}), ``product_details``,
        ``cart_coupon_discount_amount``, ``customer``, ``callback_url``…, as the API takes them."""
        body: dict[str, Any] = {"amount": {"value": amount, "currency": currency}, "pre_auth": pre_auth,
                                "payment_method": payment_method, "card": card, **extra}
        if merchant_order_reference:
            body["merchant_order_reference"] = merchant_order_reference
        return self._call("POST", "/v1/checkouts", body)

    def discover_offers(self, *, amount: int, currency: str = "INR", card_number: str | None = None,
                        **extra: Any) -> dict[str, Any]:
        """Plural's EMI issuers and tenures for this amount (``product_details``,
        ``cart_coupon_discount_amount`` as the API takes them; a card lists Debit EMI issuers)."""
        body: dict[str, Any] = {"amount": {"value": amount, "currency": currency}, **extra}
        if card_number:
            body["card"] = {"number": card_number}
        return self._call("POST", "/v1/offers/discovery", body)

    def get_checkout(self, checkout_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/checkouts/{checkout_id}")

    def submit_otp(self, checkout_id: str, otp: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/checkouts/{checkout_id}/otp", {"otp": otp})

    def resend_otp(self, checkout_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/checkouts/{checkout_id}/otp/resend")

    def cancel(self, checkout_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/checkouts/{checkout_id}/cancel")

    def deliver(self, checkout_id: str, capture_amount: int | None = None, currency: str = "INR") -> dict[str, Any]:
        body = {"capture_amount": {"value": capture_amount, "currency": currency}} if capture_amount else {}
        return self._call("POST", f"/v1/checkouts/{checkout_id}/delivery", body)

    def refund(self, checkout_id: str, amount: int | None = None, currency: str = "INR",
               merchant_refund_reference: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if amount is not None:
            body["amount"] = {"value": amount, "currency": currency}
        if merchant_refund_reference:
            body["merchant_refund_reference"] = merchant_refund_reference
        return self._call("POST", f"/v1/checkouts/{checkout_id}/refunds", body)

    def list_checkouts(self, *, status: str | None = None, created_after: str | None = None,
                       cursor: str | None = None, limit: int = 50) -> dict[str, Any]:
        query = {k: v for k, v in {"status": status, "created_after": created_after, "cursor": cursor,
                                   "limit": limit}.items() if v is not None}
        return self._call("GET", "/v1/checkouts?" + urlencode(query))

    def events(self, *, after: str | None = None, type: str | None = None, limit: int = 100) -> dict[str, Any]:  # noqa: A002
        """Events after the cursor ``after`` (``next`` of the previous answer), oldest first."""
        query = {k: v for k, v in {"after": after, "type": type, "limit": limit}.items() if v is not None}
        return self._call("GET", "/v1/events?" + urlencode(query))

    def redeliver(self, event_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/events/{event_id}/redeliver")

    @staticmethod
    def verify_event(secret: str, headers: Mapping[str, str], body: bytes | str) -> dict[str, Any]:
        """For the shop's receiver: check an event's Standard Webhooks signature (``secret`` is
        ``MERCHANT_WEBHOOK_SECRET``, ``whsec_…``) and return the event; ``EventRejected`` if the
        signature is missing, wrong or older than five minutes. Repeats carry the same
        ``webhook-id`` (the event's id): keep the ids you handled and drop repeats."""
        from standardwebhooks import Webhook

        try:
            event = Webhook(secret).verify(body, {k.lower(): v for k, v in dict(headers).items()})
        except Exception as exc:
            raise EventRejected(str(exc)) from None
        return dict(event)

    def wait(self, checkout_id: str, until: Iterable[str] = FINAL_STATUSES, timeout: float = 60.0,
             interval: float = 0.1, current: dict[str, Any] | None = None) -> dict[str, Any]:
        """Wait until the checkout's status is one of ``until``; return it (TimeoutError otherwise).

        Long polls (``changed_from`` + ``wait``): each call is answered the moment the status
        changes. ``current``: the checkout as last seen (an answer to create or submit), so the
        first call already waits. ``interval`` only paces a server that answers without waiting."""
        wanted = set(until)
        deadline = time.monotonic() + timeout
        checkout = current if current is not None else self.get_checkout(checkout_id)
        while checkout["status"] not in wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"checkout {checkout_id} still {checkout['status']} after {timeout}s")
            seen, asked = checkout["status"], time.monotonic()
            chunk = max(0.1, min(left, 25.0, self.timeout * 0.8))
            checkout = self._call("GET", f"/v1/checkouts/{checkout_id}?changed_from={seen}&wait={chunk:.1f}")
            if checkout["status"] == seen and time.monotonic() - asked < min(interval, chunk):
                time.sleep(interval)
        return checkout

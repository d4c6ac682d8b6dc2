"""Plural's official Python SDK (``pinelabs-python``) works against the sandbox, pointed at it with
its own documented ``base_url`` option (the SDK is not patched).

Where the SDK and the documents read Plural differently, the sandbox's setting for that reading is
used and named:

- a repeated ``merchant_order_reference``: the SDK's docstring says the existing order is returned;
  Plural's error list says 422 ``DUPLICATE_REQUEST`` (the sandbox's default). ``SANDBOX_DUPLICATES=replay``
  is the SDK's reading;
- the token's expiry: the seeds answer ``expires_in``, the SDK's model has ``expires_at``
  (its model keeps unknown fields, so either is readable).

The SDK has no helper to verify a webhook or a return-URL signature (it has no ``hmac`` and no
``signature`` anywhere): a merchant verifies them as the documents say. Here the sandbox's webhook
for an order the SDK made is verified with the Standard Webhooks package, and its signed return URL
with the seed's algorithm written out independently of ``orchestrator.plural.signatures``.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from pinelabs import Amount, PaymentRequestItem, PinelabsApi
from pinelabs.errors import UnprocessableEntityError

OTP_CARD = "4012001037141112"
ACS_CARD = "5555555555554444"


def _card(number: str) -> dict:
    return {"card_details": {"name": "Kevin", "card_number": number, "cvv": "123", "expiry_month": "12",
                             "expiry_year": "2030"}}


@pytest.fixture
def sdk(sandbox, sandbox_settings):
    """The SDK with a token from the sandbox, through the SDK's own token call."""
    bootstrap = PinelabsApi(base_url=sandbox.url, token="unused-by-the-token-call")
    token = bootstrap.authentication.generate_token(
        client_id=sandbox_settings.plural_client_id,
        client_secret=sandbox_settings.plural_client_secret.get_secret_value(), grant_type="client_credentials")
    assert token.access_token
    return PinelabsApi(base_url=sandbox.url, token=token.access_token, timeout=10)


def _order(sdk, *, amount=1100, pre_auth=False, reference=None):
    return sdk.orders.create_order(merchant_order_reference=reference or f"sdk-{uuid.uuid4().hex[:12]}",
                                   order_amount=Amount(value=amount, currency="INR"), pre_auth=pre_auth,
                                   callback_url="https://shop.test/ok", failure_callback_url="https://shop.test/fail")


def _pay(sdk, order, number=OTP_CARD):
    return sdk.card_payments.create_payment(order.data.order_id, payments=[PaymentRequestItem(
        merchant_payment_reference=f"{order.data.merchant_order_reference}-p1", payment_method="CARD",
        payment_amount=Amount(value=order.data.order_amount.value, currency="INR"), payment_option=_card(number),
        device_info={"browser_user_agent": "pytest", "device_channel": "browser"})])


def test_the_sdks_token_call_gets_a_token_with_its_expiry(sandbox, sandbox_settings):
    api = PinelabsApi(base_url=sandbox.url, token="unused-by-the-token-call")
    token = api.authentication.generate_token(
        client_id=sandbox_settings.plural_client_id,
        client_secret=sandbox_settings.plural_client_secret.get_secret_value(), grant_type="client_credentials")
    assert token.access_token
    # the SDK's model names expires_at, as Plural's token reference and the sandbox's default do
    assert token.expires_at is not None


def test_the_sdk_drives_token_order_card_payment_native_otp_and_get_order(sdk, sandbox):
    order = _order(sdk)
    assert order.data.status == "CREATED" and order.data.order_id.startswith("v1-")
    assert order.data.order_amount.value == 1100

    paid = _pay(sdk, order)
    payment = paid.data.payments[0]
    assert paid.data.status == "PENDING" and payment.status == "PENDING" and payment.payment_method == "CARD"
    assert payment.payment_option.card_data.network_name == "VISA"
    assert paid.data.challenge_url  # the bank page, for a card without native OTP

    sent = sdk.card_payments.generate_otp(payment_id=payment.id)
    assert "SUBMIT_OTP" in sent.next and sent.meta_data.resend_after.isdigit()
    assert sdk.card_payments.submit_otp(payment_id=payment.id, otp="123456").status == "SUCCESS"

    got = sdk.orders.get_order_by_id(order.data.order_id)
    assert got.data.status == "PROCESSED" and got.data.payments[0].status == "PROCESSED"
    assert got.data.payments[0].capture_data[0].capture_amount.value == 1100
    assert sdk.orders.get_order_by_merchant_reference(order.data.merchant_order_reference).data.order_id == \
        order.data.order_id


def test_the_sdk_surfaces_a_wrong_otp_as_plurals_422_error_body(sdk):
    order = _order(sdk)
    payment = _pay(sdk, order).data.payments[0]
    sdk.card_payments.generate_otp(payment_id=payment.id)
    with pytest.raises(UnprocessableEntityError) as refused:
        sdk.card_payments.submit_otp(payment_id=payment.id, otp="000000")
    body = refused.value.body
    assert refused.value.status_code == 422 and body["code"] == "INVALID_OTP"
    assert set(body["additional_error_details"]) == {"source", "step", "reason"}


def test_a_repeated_order_reference_is_refused_with_422_duplicate_request_as_the_error_list_says(sdk):
    order = _order(sdk)
    with pytest.raises(UnprocessableEntityError) as refused:
        _order(sdk, reference=order.data.merchant_order_reference)
    assert refused.value.body["code"] == "DUPLICATE_REQUEST"


@pytest.fixture
def replay(sandbox):
    """``SANDBOX_DUPLICATES=replay``: the SDK's reading of a repeated reference."""
    requests.put(sandbox.url + "/sandbox/config", json={"duplicates": "replay"}, timeout=5).raise_for_status()
    yield
    requests.put(sandbox.url + "/sandbox/config", json={"duplicates": "refuse"}, timeout=5).raise_for_status()


def test_with_the_sdks_reading_a_repeated_order_reference_returns_the_existing_order(sdk, replay):
    order = _order(sdk)
    again = _order(sdk, reference=order.data.merchant_order_reference)
    assert again.data.order_id == order.data.order_id


def test_the_sandboxs_webhook_for_an_sdk_order_verifies_as_standard_webhooks(sdk, webhook_catcher,
                                                                             sandbox_settings):
    from standardwebhooks import Webhook

    order = _order(sdk, pre_auth=True)
    payment = _pay(sdk, order).data.payments[0]
    sdk.card_payments.generate_otp(payment_id=payment.id)
    sdk.card_payments.submit_otp(payment_id=payment.id, otp="123456")
    hit = webhook_catcher.wait_for(lambda c: c.json()["data"]["order_id"] == order.data.order_id)[0]
    event = Webhook(sandbox_settings.webhook_key()).verify(hit.body, hit.headers)
    assert event["event_type"] == "ORDER_AUTHORIZED" and event["data"]["status"] == "AUTHORIZED"


def _seed_signature(fields: dict[str, str], hex_key: str) -> str:
    """The native OTP seed's return-URL signature (4.2): every field but ``signature``, sorted by
    key, ``key=value`` joined by ``&``, HMAC-SHA256 keyed with the hex-decoded secret, upper-case hex."""
    message = "&".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "signature")
    return hmac.new(bytes.fromhex(hex_key), message.encode(), hashlib.sha256).hexdigest().upper()


def test_the_bank_page_sends_an_sdk_order_back_with_a_signature_the_seeds_algorithm_verifies(
        sdk, sandbox, sandbox_settings):
    order = _order(sdk)
    paid = _pay(sdk, order, ACS_CARD)
    token = parse_qs(urlparse(paid.data.challenge_url).query)["token"][0]
    answer = requests.post(f"{sandbox.url}/sandbox/acs/{paid.data.payments[0].id}/approve", data={"token": token},
                           allow_redirects=False, timeout=5)
    assert answer.status_code == 303
    fields = {k: v[0] for k, v in parse_qs(urlparse(answer.headers["location"]).query).items()}
    assert fields["order_id"] == order.data.order_id and fields["status"] == "PROCESSED"
    assert fields["signature"] == _seed_signature(fields, sandbox_settings.plural_callback_secret.get_secret_value())
    assert sdk.orders.get_order_by_id(order.data.order_id).data.status == "PROCESSED"

"""The Plural client drives the sandbox over real HTTP through every documented flow."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from orchestrator.plural import errors
from orchestrator.plural.models import (
    Amount, CaptureRequest, CardDetails, CardDetailsRequest, CardIdentifier, CreateOrderRequest,
    CreatePaymentRequest, OfferDiscoveryRequest, PaymentOption, PaymentRequest, RefundRequest)
from orchestrator.plural.signatures import verify_callback, verify_webhook
from tests.conftest import ledger

OTP_CARD = "4012001037141112"
ACS_CARD = "5555555555554444"
DECLINE_CARD = "4000000000000002"
OTP_REFUSED_CARD = "4111111111111111"


def ref(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["refuse", "replay"])
def duplicates(request, sandbox):
    """Plural's documents disagree on a repeated reference: 422 DUPLICATE_REQUEST, or the object
    already made (the SDK's reading). The sandbox offers both."""
    requests.put(sandbox.url + "/sandbox/config", json={"duplicates": request.param}, timeout=5).raise_for_status()
    yield request.param
    requests.put(sandbox.url + "/sandbox/config", json={"duplicates": "refuse"}, timeout=5).raise_for_status()


def _repeat(duplicates, call):
    """The repeated call's answer (``replay``), or None once it was refused as a duplicate."""
    if duplicates == "replay":
        return call()
    with pytest.raises(errors.BusinessRuleError) as refused:
        call()
    assert refused.value.status == 422 and refused.value.code == "DUPLICATE_REQUEST"
    return None


def order(client, amount=1100, pre_auth=False, callback=True):
    kwargs = {"callback_url": "https://shop.test/ok", "failure_callback_url": "https://shop.test/fail"} if callback else {}
    return client.create_order(CreateOrderRequest(merchant_order_reference=ref("o"), order_amount=Amount(value=amount),
                                                  pre_auth=pre_auth, **kwargs))


def pay(client, o, card=OTP_CARD, reference=None, **card_fields):
    details = {"name": "Kevin", "card_number": card, "cvv": "123", "expiry_month": "12", "expiry_year": "2030",
               **card_fields}
    return client.create_payment(o.order_id, CreatePaymentRequest(payments=[PaymentRequest(
        merchant_payment_reference=reference or ref("p"), payment_method="CARD", payment_amount=o.order_amount,
        payment_option=PaymentOption(card_details=CardDetails(**details)))]))


def authorize_with_otp(client, o):
    paid = pay(client, o)
    payment_id = paid.payments[0].id
    client.generate_otp(payment_id)
    assert client.submit_otp(payment_id, "123456").status == "SUCCESS"
    return client.get_order(o.order_id)


def kinds(base_url, order_id):
    return [e["kind"] for e in ledger(base_url, order_id)]


def test_full_card_payment_with_native_otp_ends_processed(client, sandbox):
    o = order(client)
    paid = pay(client, o)
    assert paid.status == "PENDING"
    info = client.get_card_details(CardDetailsRequest(amount="1100", card_details=[
        CardIdentifier(payment_identifier=OTP_CARD)]))
    assert info.card_payment_details[0].is_native_otp_supported
    otp = client.generate_otp(paid.payments[0].id)
    assert otp.next == ["SUBMIT_OTP", "RESEND_OTP"] and otp.resend_after_seconds == 1
    client.submit_otp(paid.payments[0].id, "123456")
    final = client.get_order(o.order_id)
    assert final.status == "PROCESSED" and final.payments[0].status == "PROCESSED"
    assert kinds(sandbox.url, o.order_id) == ["ORDER_CREATED", "PAYMENT_CREATED", "AUTHORIZED", "CAPTURED"]


def test_pre_auth_payment_stops_at_authorized_and_captures_in_full(client, sandbox):
    o = order(client, amount=5000, pre_auth=True)
    assert authorize_with_otp(client, o).status == "AUTHORIZED"
    captured = client.capture_order(o.order_id, CaptureRequest(merchant_capture_reference=ref("c")))
    assert captured.status == "PROCESSED" and captured.captured_amount() == 5000


def test_partial_capture_never_above_the_authorized_amount_and_only_once(client, sandbox, duplicates):
    o = order(client, amount=5000, pre_auth=True)
    authorize_with_otp(client, o)
    with pytest.raises(errors.InvalidRequest):
        client.capture_order(o.order_id, CaptureRequest(merchant_capture_reference=ref("c"),
                                                        capture_amount=Amount(value=5001)))
    cap_ref = ref("c")
    first = client.capture_order(o.order_id, CaptureRequest(merchant_capture_reference=cap_ref,
                                                            capture_amount=Amount(value=3000)))
    again = _repeat(duplicates, lambda: client.capture_order(o.order_id, CaptureRequest(
        merchant_capture_reference=cap_ref, capture_amount=Amount(value=3000))))
    assert first.status == "PARTIALLY_CAPTURED" and (again is None or again.status == "PARTIALLY_CAPTURED")
    with pytest.raises(errors.BusinessRuleError):
        client.capture_order(o.order_id, CaptureRequest(merchant_capture_reference=ref("c")))
    captures = [e for e in ledger(sandbox.url, o.order_id) if e["kind"] == "CAPTURED"]
    assert [e["amount"]["value"] for e in captures] == [3000]


def test_capture_is_refused_before_authorization(client, sandbox):
    o = order(client, pre_auth=True)
    with pytest.raises(errors.BusinessRuleError):
        client.capture_order(o.order_id, CaptureRequest(merchant_capture_reference=ref("c")))


def test_cancel_releases_an_authorized_hold_and_is_idempotent(client, sandbox):
    o = order(client, amount=2500, pre_auth=True)
    authorize_with_otp(client, o)
    assert client.cancel_order(o.order_id).status == "CANCELLED"
    assert client.cancel_order(o.order_id).status == "CANCELLED"
    cancels = [e for e in ledger(sandbox.url, o.order_id) if e["kind"] == "CANCELLED"]
    assert len(cancels) == 1 and cancels[0]["amount"]["value"] == 2500


def test_cancel_of_a_processed_order_is_refused(client, sandbox):
    o = order(client)
    authorize_with_otp(client, o)
    with pytest.raises(errors.BusinessRuleError):
        client.cancel_order(o.order_id)


def test_refunds_full_partial_and_never_above_captured(client, sandbox):
    o = order(client, amount=10000)
    authorize_with_otp(client, o)
    partial = client.create_refund(o.order_id, RefundRequest(merchant_order_reference=ref("r"),
                                                             order_amount=Amount(value=4000)))
    assert partial.type == "REFUND" and partial.parent_order_id == o.order_id
    assert client.get_order(partial.order_id).status == "PROCESSED"
    assert client.get_order(o.order_id).status == "PARTIALLY_REFUNDED"
    with pytest.raises(errors.InvalidRequest):
        client.create_refund(o.order_id, RefundRequest(merchant_order_reference=ref("r"),
                                                       order_amount=Amount(value=6001)))
    rest_ref = ref("r")
    rest = client.create_refund(o.order_id, RefundRequest(merchant_order_reference=rest_ref))
    assert rest.order_amount.value == 6000
    with pytest.raises(errors.BusinessRuleError) as repeated:  # a repeated reference is refused, as Plural does
        client.create_refund(o.order_id, RefundRequest(merchant_order_reference=rest_ref))
    assert repeated.value.code == "DUPLICATE_REQUEST"
    found = client.get_order_by_reference(rest_ref)  # a refund order is found by its reference
    assert (found.order_id, found.type, found.parent_order_id) == (rest.order_id, "REFUND", o.order_id)
    assert client.get_order(o.order_id).status == "FULLY_REFUNDED"
    refunds = [e["amount"]["value"] for e in ledger(sandbox.url, o.order_id) if e["kind"] == "REFUNDED"]
    assert refunds == [4000, 6000]


def test_refund_of_an_unpaid_order_is_refused(client, sandbox):
    o = order(client)
    with pytest.raises(errors.BusinessRuleError):
        client.create_refund(o.order_id, RefundRequest(merchant_order_reference=ref("r")))


def test_an_order_above_the_documented_maximum_is_refused(client, sandbox):
    with pytest.raises(errors.BusinessRuleError) as refused:
        order(client, amount=100_000_001)
    assert refused.value.code == "AMOUNT_LIMIT_EXCEEDED"
    assert order(client, amount=100_000_000).order_amount.value == 100_000_000


def test_decline_at_payment_leaves_the_order_attempted(client, sandbox, duplicates):
    o = order(client)
    reference = ref("p")
    with pytest.raises(errors.PaymentDeclined) as exc:
        pay(client, o, DECLINE_CARD, reference=reference)
    assert exc.value.code == "PAYMENT_DECLINED"
    after = client.get_order(o.order_id)
    assert after.status == "ATTEMPTED" and after.payments[0].status == "FAILED"
    assert after.payment_retries_remaining == 8
    # the same payment reference again: refused as a duplicate, or the same decline; no second payment
    if duplicates == "replay":
        with pytest.raises(errors.PaymentDeclined):
            pay(client, o, DECLINE_CARD, reference=reference)
    else:
        _repeat(duplicates, lambda: pay(client, o, DECLINE_CARD, reference=reference))
    assert len(client.get_order(o.order_id).payments) == 1


def test_acs_page_approve_authorizes_and_redirects_with_a_signed_callback(client, sandbox, sandbox_settings):
    o = order(client, pre_auth=True)
    assert not client.get_card_details(CardDetailsRequest(card_details=[
        CardIdentifier(payment_identifier=ACS_CARD)])).card_payment_details[0].is_native_otp_supported
    paid = pay(client, o, ACS_CARD)
    page = requests.get(paid.challenge_url, timeout=5)
    assert page.status_code == 200 and "Approve" in page.text and "4444" in page.text
    assert ACS_CARD not in page.text
    token = parse_qs(urlparse(paid.challenge_url).query)["token"][0]
    answer = requests.post(f"{sandbox.url}/sandbox/acs/{paid.payments[0].id}/approve", data={"token": token},
                           allow_redirects=False, timeout=5)
    assert answer.status_code == 303
    target = urlparse(answer.headers["location"])
    assert target.netloc == "shop.test" and target.path == "/ok"
    fields = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert fields["status"] == "AUTHORIZED" and fields["order_id"] == o.order_id
    verify_callback(fields, sandbox_settings.callback_key())
    assert client.get_order(o.order_id).status == "AUTHORIZED"


def test_acs_page_decline_redirects_to_failure_url_with_error_fields(client, sandbox, sandbox_settings):
    o = order(client)
    paid = pay(client, o, ACS_CARD)
    token = parse_qs(urlparse(paid.challenge_url).query)["token"][0]
    answer = requests.post(f"{sandbox.url}/sandbox/acs/{paid.payments[0].id}/decline", data={"token": token},
                           allow_redirects=False, timeout=5)
    target = urlparse(answer.headers["location"])
    assert target.path == "/fail"
    fields = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert fields["status"] == "FAILED" and fields["error_code"] == "USER_AUTHENTICATION_FAILED"
    verify_callback(fields, sandbox_settings.callback_key())
    assert client.get_order(o.order_id).status == "ATTEMPTED"


def test_acs_page_refuses_a_wrong_token(client, sandbox):
    o = order(client)
    paid = pay(client, o, ACS_CARD)
    answer = requests.post(f"{sandbox.url}/sandbox/acs/{paid.payments[0].id}/approve", data={"token": "nope"},
                           allow_redirects=False, timeout=5)
    assert answer.status_code == 403
    assert client.get_order(o.order_id).status == "PENDING"


def test_generate_otp_is_refused_for_a_card_without_native_otp(client, sandbox):
    for card in (ACS_CARD, OTP_REFUSED_CARD):
        paid = pay(client, order(client), card)
        with pytest.raises(errors.OTPRejected):
            client.generate_otp(paid.payments[0].id)


def test_three_wrong_otps_fail_the_payment(client, sandbox):
    o = order(client)
    payment_id = pay(client, o).payments[0].id
    client.generate_otp(payment_id)
    codes = []
    for _ in range(3):
        with pytest.raises(errors.OTPRejected) as exc:
            client.submit_otp(payment_id, "000000")
        codes.append(exc.value.code)
    assert codes == ["INVALID_OTP", "INVALID_OTP", "OTP_ATTEMPTS_EXHAUSTED"]
    after = client.get_order(o.order_id)
    assert after.payments[0].status == "FAILED" and after.status == "FAILED"
    with pytest.raises(errors.OTPRejected):
        client.submit_otp(payment_id, "123456")


def test_error_details_carry_only_source_step_and_reason_as_plural_documents(client, sandbox):
    payment_id = pay(client, order(client)).payments[0].id
    client.generate_otp(payment_id)
    for call in (lambda: client.submit_otp(payment_id, "000000"), lambda: client.resend_otp(payment_id)):
        with pytest.raises(errors.OTPRejected) as exc:
            call()
        assert set(exc.value.details) == {"source", "step", "reason"}
    with pytest.raises(errors.InvalidRequest) as bad:
        client.submit_otp(payment_id, "12")
    assert set(bad.value.details) == {"source", "step", "reason"} and bad.value.details["source"] == "otp"


def test_a_second_generate_otp_is_refused_as_already_generated(client, sandbox):
    """Plural's documents are silent on a second Generate OTP; its reference lists 422 for a
    payment not eligible for OTP generation: the sandbox's default refuses it, and the first OTP
    still works."""
    payment_id = pay(client, order(client)).payments[0].id
    client.generate_otp(payment_id)
    with pytest.raises(errors.OTPRejected) as exc:
        client.generate_otp(payment_id)
    assert exc.value.status == 422 and exc.value.code == "OTP_ALREADY_GENERATED"
    assert exc.value.details == {"source": "otp", "step": "GENERATE_OTP", "reason": "OTP_ALREADY_GENERATED"}
    assert client.submit_otp(payment_id, "123456").status == "SUCCESS"


def test_a_second_generate_otp_sends_a_fresh_otp_when_set_to_resend(client, sandbox):
    requests.put(sandbox.url + "/sandbox/config", json={"second_generate_otp": "resend"}, timeout=5).raise_for_status()
    try:
        payment_id = pay(client, order(client)).payments[0].id
        client.generate_otp(payment_id)
        time.sleep(1.05)  # past resend_after (1 s in the tests' settings)
        again = client.generate_otp(payment_id)
        assert again.next == ["SUBMIT_OTP", "RESEND_OTP"]
        with pytest.raises(errors.OTPRejected) as exc:  # a fresh OTP: its resend timer starts again
            client.resend_otp(payment_id)
        assert exc.value.code == "OTP_RESEND_NOT_ALLOWED"
    finally:
        requests.put(sandbox.url + "/sandbox/config", json={"second_generate_otp": "refuse"}, timeout=5)


def test_resend_honours_resend_after_and_the_limit(client, sandbox):
    payment_id = pay(client, order(client)).payments[0].id
    client.generate_otp(payment_id)
    with pytest.raises(errors.OTPRejected) as exc:
        client.resend_otp(payment_id)
    assert exc.value.code == "OTP_RESEND_NOT_ALLOWED"
    for _ in range(3):
        time.sleep(1.05)
        assert client.resend_otp(payment_id).status == "SUCCESS"
    time.sleep(1.05)
    with pytest.raises(errors.OTPRejected) as exc:
        client.resend_otp(payment_id)
    assert exc.value.code == "OTP_RESEND_LIMIT_REACHED"


def test_order_reference_is_idempotent_and_findable(client, sandbox, duplicates):
    reference = ref("o")
    first = client.create_order(CreateOrderRequest(merchant_order_reference=reference, order_amount=Amount(value=900)))
    second = _repeat(duplicates, lambda: client.create_order(
        CreateOrderRequest(merchant_order_reference=reference, order_amount=Amount(value=900))))
    assert second is None or first.order_id == second.order_id
    assert client.get_order_by_reference(reference).order_id == first.order_id
    assert kinds(sandbox.url, first.order_id) == ["ORDER_CREATED"]


def test_payment_reference_is_idempotent(client, sandbox, duplicates):
    o = order(client)
    reference = ref("p")
    pay(client, o, reference=reference)
    again = _repeat(duplicates, lambda: pay(client, o, reference=reference))
    assert again is None or len(again.payments) == 1
    assert kinds(sandbox.url, o.order_id).count("PAYMENT_CREATED") == 1


@pytest.mark.parametrize("body,field", [
    ({"order_amount": {"value": 0, "currency": "INR"}}, "value"),
    ({"order_amount": {"value": -5, "currency": "INR"}}, "value"),
    ({"order_amount": {"value": 10.5, "currency": "INR"}}, "value"),
    ({"order_amount": {"value": "100", "currency": "INR"}}, "value"),
    ({"order_amount": {"value": 100, "currency": "XYZ"}}, "currency"),
    ({"merchant_order_reference": "bad ref!"}, "reference"),
    ({"merchant_order_reference": "x" * 51}, "reference"),
])
def test_bad_orders_are_refused_with_plural_error_body(client, sandbox, body, field):
    base = {"merchant_order_reference": ref("o"), "order_amount": {"value": 100, "currency": "INR"}}
    base.update(body)
    token = client.requestor.tokens.get()
    answer = requests.post(sandbox.url + "/api/pay/v1/orders", json=base,
                           headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["code"] == "INVALID_REQUEST" and answer.json()["message"]


@pytest.mark.parametrize("fields,error", [
    ({"card": "4012001037141113"}, errors.InvalidRequest),
    ({"expiry_year": "2020"}, errors.PaymentDeclined),
    ({"cvv": "12"}, errors.InvalidRequest),
    ({"expiry_month": "13"}, errors.InvalidRequest),
])
def test_bad_cards_are_refused(client, sandbox, fields, error):
    o = order(client)
    card = fields.pop("card", OTP_CARD)
    with pytest.raises(error):
        pay(client, o, card, **fields)
    assert client.get_order(o.order_id).payments == []


def test_calls_without_a_valid_token_get_401(sandbox):
    answer = requests.get(sandbox.url + "/api/pay/v1/orders/x", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"


def test_expired_token_is_refreshed_by_the_client(client, sandbox):
    o = order(client)
    requests.post(sandbox.url + "/sandbox/tokens/expire", timeout=5)
    assert client.get_order(o.order_id).order_id == o.order_id


def test_unknown_order_is_404(client, sandbox):
    with pytest.raises(errors.NotFound):
        client.get_order("v1-000000000000-aa-nothere")


def test_webhooks_are_signed_standard_webhooks(client, sandbox, webhook_catcher, sandbox_settings):
    o = order(client, pre_auth=True)
    authorize_with_otp(client, o)
    hit = webhook_catcher.wait_for(lambda c: c.json()["data"]["order_id"] == o.order_id)[0]
    verify_webhook(sandbox_settings.webhook_key(), hit.body, hit.headers)
    assert hit.json()["event_type"] == "ORDER_AUTHORIZED" and hit.json()["data"]["status"] == "AUTHORIZED"


def test_failed_webhook_delivery_is_retried_with_the_same_id(client, sandbox, webhook_catcher):
    webhook_catcher.status = 500
    o = order(client)
    with pytest.raises(errors.PaymentDeclined):
        pay(client, o, DECLINE_CARD)
    hits = webhook_catcher.wait_for(lambda c: c.json()["data"]["order_id"] == o.order_id and
                                    len([x for x in webhook_catcher.received
                                         if x.json()["data"]["order_id"] == o.order_id]) >= 4)
    ids = {h.headers["webhook-id"] for h in hits}
    assert len(hits) >= 4 and len(ids) == 1
    assert hits[0].json()["event_type"] == "PAYMENT_FAILED"


def test_dropped_webhooks_are_never_sent(client, sandbox, webhook_catcher):
    requests.put(sandbox.url + "/sandbox/faults", json={"webhooks": {"drop": 1.0}}, timeout=5)
    o = order(client)
    authorize_with_otp(client, o)
    time.sleep(0.3)
    assert not [c for c in webhook_catcher.received if c.json()["data"]["order_id"] == o.order_id]
    deliveries = requests.get(sandbox.url + "/sandbox/webhooks", timeout=5).json()["deliveries"]
    assert [d["outcome"] for d in deliveries if d["order_id"] == o.order_id] == ["dropped"]


def test_duplicated_webhooks_share_their_id(client, sandbox, webhook_catcher):
    requests.put(sandbox.url + "/sandbox/faults", json={"webhooks": {"duplicate": 1.0}}, timeout=5)
    o = order(client)
    authorize_with_otp(client, o)
    hits = webhook_catcher.wait_for(lambda c: c.json()["data"]["order_id"] == o.order_id and len(
        [x for x in webhook_catcher.received if x.json()["data"]["order_id"] == o.order_id]) >= 2)
    assert len({h.headers["webhook-id"] for h in hits}) == 1


def test_injected_server_errors_are_retried_by_the_client(client, sandbox):
    requests.put(sandbox.url + "/sandbox/faults", json={"rules": [
        {"kind": "error", "path": "/api/pay/v1/orders$", "statuses": [503], "count": 2}]}, timeout=5)
    o = order(client)
    assert o.status == "CREATED"
    assert json.loads(requests.get(sandbox.url + "/sandbox/faults", timeout=5).text)["rules"][0]["count"] == 0


def test_hang_after_handling_gives_an_unknown_outcome_that_get_order_resolves(client, sandbox, sandbox_settings):
    from orchestrator.plural import PluralClient

    o = order(client, pre_auth=True)
    authorize_with_otp(client, o)
    requests.put(sandbox.url + "/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "/cancel$", "seconds": 1.5, "count": 1}]}, timeout=5)
    impatient = PluralClient.from_settings(sandbox_settings.model_copy(update={"plural_api_base": sandbox.url}),
                                           read_timeout=0.5)
    with pytest.raises(errors.OutcomeUnknown):
        impatient.cancel_order(o.order_id)
    assert client.get_order(o.order_id).status == "CANCELLED"


def test_latency_fault_slows_calls(client, sandbox):
    requests.put(sandbox.url + "/sandbox/faults", json={"rules": [
        {"kind": "latency", "path": "/orders", "seconds": 0.3, "count": 1}]}, timeout=5)
    started = time.monotonic()
    order(client)
    assert time.monotonic() - started >= 0.3


def test_offer_discovery_through_the_client(client, sandbox):
    found = client.discover_offers(OfferDiscoveryRequest(order_amount=Amount(value=1200000)))
    assert [i.name for i in found.issuers] == ["INDUSIND CC"]
    assert found.issuers[0].tenures[0].monthly_emi_amount.value == 410713


def test_discovery_keeps_plurals_json_as_sent(client, sandbox):
    from tests.seeds import emi_samples

    found = client.discover_offers(OfferDiscoveryRequest(order_amount=Amount(value=1200000)))
    assert found.raw == emi_samples()[3]
    assert found.issuers[0].tenures[0].interest_rate_percentage == 16
    assert '"interest_rate_percentage":16,' in found.model_dump_json()


def test_validation_sends_the_offer_exactly_as_discovered(client, sandbox):
    from orchestrator.domain import emi
    from orchestrator.plural.models import OfferValidationRequest
    from tests.seeds import emi_samples

    found = client.discover_offers(OfferDiscoveryRequest(order_amount=Amount(value=1200000)))
    chosen = emi.choose(found.raw, "23", "2", None)
    request = OfferValidationRequest(order_amount=Amount(value=1200000), payment_amount=Amount(value=1200000),
                                     offer_data={"offer_details": chosen.offer_details}, payment_method="CREDIT_EMI")
    assert request.wire()["offer_data"]["offer_details"]["tenure"] == emi_samples()[3]["issuers"][0]["tenures"][1]
    assert client.validate_offer(request).code == "ELIGIBLE"


@pytest.mark.parametrize("method,path", [("PUT", "/sandbox/faults"), ("DELETE", "/sandbox/faults"),
                                         ("GET", "/sandbox/config"), ("PUT", "/sandbox/config"),
                                         ("POST", "/sandbox/reset"), ("POST", "/sandbox/clock"),
                                         ("POST", "/sandbox/tokens/expire"), ("GET", "/sandbox/offers"),
                                         ("PUT", "/sandbox/offers")])
def test_the_sandbox_controls_need_the_admin_key(sandbox, method, path):
    import requests as plain

    from tests.conftest import _plain_request

    answer = _plain_request(plain.Session(), method, sandbox.url + path, json={}, timeout=5)
    assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"


def test_the_sandbox_remembers_its_orders_across_a_restart(tmp_path):
    """Like Plural, the sandbox does not forget: an order made before a restart is still there."""
    from fastapi.testclient import TestClient

    from config import Settings
    from devkit.sandbox import app_from_settings

    settings = Settings()
    state = tmp_path / "sandbox-state.pickle"

    def token(client: TestClient) -> dict[str, str]:
        answer = client.post("/api/auth/v1/token", json={
            "client_id": settings.plural_client_id, "client_secret": settings.plural_client_secret.get_secret_value(),
            "grant_type": "client_credentials"})
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    with TestClient(app_from_settings(settings, port=8700, state_file=state)) as client:
        made = client.post("/api/pay/v1/orders", headers=token(client), json={
            "merchant_order_reference": "remember-me", "order_amount": {"value": 1100, "currency": "INR"},
            "pre_auth": False})
        assert made.status_code == 200, made.text
        order_id = made.json()["data"]["order_id"]
    assert state.exists()
    with TestClient(app_from_settings(settings, port=8700, state_file=state)) as client:
        again = client.get(f"/api/pay/v1/orders/{order_id}", headers=token(client))
        assert again.status_code == 200 and again.json()["data"]["merchant_order_reference"] == "remember-me"
    with TestClient(app_from_settings(settings, port=8700)) as client:  # without a state file: nothing kept
        assert client.get(f"/api/pay/v1/orders/{order_id}", headers=token(client)).status_code == 404


def _retried(sandbox, webhook_catcher, client, schedule, timestamps, status=500):
    requests.put(sandbox.url + "/sandbox/config", json={"webhook_schedule": schedule,
                                                        "webhook_timestamps": timestamps}, timeout=5)
    webhook_catcher.status = status
    try:
        o = order(client)
        with pytest.raises(errors.PaymentDeclined):
            pay(client, o, DECLINE_CARD)
        mine = lambda: [x for x in webhook_catcher.received if x.json()["data"]["order_id"] == o.order_id]  # noqa: E731
        expected = {"plural": 9, "three": 4}[schedule]
        webhook_catcher.wait_for(lambda c: len(mine()) >= expected, timeout=60)
        return mine()
    finally:
        requests.put(sandbox.url + "/sandbox/config", json={"webhook_schedule": "plural",
                                                            "webhook_timestamps": "original"}, timeout=5)


def test_a_failing_receiver_gets_plurals_eight_retries_with_one_id_and_the_events_timestamp(
        client, sandbox, webhook_catcher):
    hits = _retried(sandbox, webhook_catcher, client, "plural", "original")
    assert len(hits) == 9 and len({h.headers["webhook-id"] for h in hits}) == 1
    stamps = [int(h.headers["webhook-timestamp"]) for h in hits]
    # the schedule's time passes for the timestamp: the last retry looks over a day old
    ages = [stamps[0] - s for s in stamps]
    schedule = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert ages[1] <= 1 and abs(ages[3] - 305) <= 2 and abs(ages[-1] - sum(schedule)) <= sum(schedule) * 0.001


def test_the_other_documented_schedule_retries_three_times_with_fresh_timestamps(client, sandbox, webhook_catcher):
    hits = _retried(sandbox, webhook_catcher, client, "three", "fresh")
    time.sleep(0.5)  # nothing more comes
    assert len(hits) == 4
    stamps = [int(h.headers["webhook-timestamp"]) for h in hits]
    assert max(stamps) - min(stamps) <= 2 and abs(time.time() - max(stamps)) <= 2


def test_a_dropped_answer_leaves_the_order_made_and_its_repeat_is_refused_as_a_duplicate(client, sandbox):
    requests.put(sandbox.url + "/sandbox/faults", json={"rules": [
        {"kind": "drop_answer", "path": "^/api/pay/v1/orders$", "statuses": [502], "count": 1}]}, timeout=5)
    before = requests.get(sandbox.url + "/sandbox/health", timeout=5).json()["duplicates_refused"]
    reference = ref("o")
    body = {"merchant_order_reference": reference, "order_amount": {"value": 1100, "currency": "INR"}}
    headers = {"Authorization": f"Bearer {client.requestor.tokens.get()}"}
    lost = requests.post(sandbox.url + "/api/pay/v1/orders", json=body, headers=headers, timeout=5)
    assert lost.status_code == 502
    made = client.get_order_by_reference(reference)
    assert made.status == "CREATED"
    again = requests.post(sandbox.url + "/api/pay/v1/orders", json=body, headers=headers, timeout=5)
    assert again.status_code == 422 and again.json()["code"] == "DUPLICATE_REQUEST"
    assert [e["kind"] for e in ledger(sandbox.url, made.order_id)] == ["ORDER_CREATED"]
    assert requests.get(sandbox.url + "/sandbox/health", timeout=5).json()["duplicates_refused"] == before + 1
    assert requests.get(sandbox.url + "/sandbox/faults", timeout=5).json()["fired"]["drop_answer"] >= 1


def test_webhooks_held_back_by_an_outage_arrive_after_it_with_their_original_timestamp_outside_the_tolerance(
        client, sandbox, webhook_catcher):
    # the test sandbox's schedule runs 10,000 times faster: attempts at 0, 0, 0.5 ms, 31 ms, 0.21 s
    # and 0.93 s; an outage of 0.5 s fails the first five, the sixth is signed with the event's
    # time moved back by the 0 + 5 + 300 + 1800 + 7200 s the schedule waited
    late_before = requests.get(sandbox.url + "/sandbox/health", timeout=5).json()["webhooks_late"]
    requests.put(sandbox.url + "/sandbox/faults", json={"webhooks": {"outage": 0.5}}, timeout=5).raise_for_status()
    o = order(client)
    with pytest.raises(errors.PaymentDeclined):
        pay(client, o, DECLINE_CARD)
    hit = webhook_catcher.wait_for(lambda c: c.json()["data"]["order_id"] == o.order_id, timeout=10)[0]
    age = time.time() - int(hit.headers["webhook-timestamp"])
    assert [h for h in webhook_catcher.received if h.json()["data"]["order_id"] == o.order_id] == [hit]
    delivery = next(d for d in requests.get(sandbox.url + "/sandbox/webhooks", timeout=5).json()["deliveries"]
                    if d["webhook_id"] == hit.headers["webhook-id"])
    assert delivery["attempts"] >= 5 and delivery["outcome"] == "delivered" and delivery["late"] is True
    waited = sum((0, 5, 300, 1800, 7200, 18000, 36000, 36000)[:delivery["attempts"] - 1])
    assert age > 300 and abs(age - waited) <= 5
    assert requests.get(sandbox.url + "/sandbox/health", timeout=5).json()["webhooks_late"] == late_before + 1


def test_a_webhook_outage_outlasts_faults_that_replace_it_until_they_are_deleted(sandbox):
    requests.put(sandbox.url + "/sandbox/faults", json={"webhooks": {"outage": 60}}, timeout=5).raise_for_status()
    kept = requests.put(sandbox.url + "/sandbox/faults", json={"rules": []}, timeout=5).json()
    assert kept["outage_left"] > 50
    assert requests.delete(sandbox.url + "/sandbox/faults", timeout=5).json()["outage_left"] == 0


def test_strict_cancel_refuses_an_unpaid_order_with_a_payment_still_pending(client, sandbox):
    o = order(client)
    pay(client, o)
    with pytest.raises(errors.BusinessRuleError) as refused:
        client.cancel_order(o.order_id)
    assert refused.value.status == 422 and "only an AUTHORIZED" in refused.value.message
    assert client.get_order(o.order_id).status == "PENDING"


def test_a_reference_repeated_while_its_first_request_is_in_progress_gets_409_duplicate_request(client, sandbox):
    import concurrent.futures as cf

    requests.put(sandbox.url + "/sandbox/faults", json={"rules": [
        {"kind": "hang_after", "path": "^/api/pay/v1/orders$", "seconds": 1.0, "count": 1}]}, timeout=5)
    body = {"merchant_order_reference": ref("o"), "order_amount": {"value": 1100, "currency": "INR"}}
    headers = {"Authorization": f"Bearer {client.requestor.tokens.get()}"}
    post = lambda: requests.post(sandbox.url + "/api/pay/v1/orders", json=body, headers=headers, timeout=5)  # noqa: E731
    with cf.ThreadPoolExecutor(1) as pool:
        first = pool.submit(post)
        deadline = time.time() + 5
        while time.time() < deadline:  # the first is in progress once the sandbox holds its order
            if requests.get(sandbox.url + "/sandbox/faults", timeout=5).json()["rules"][0]["count"] == 0:
                break
            time.sleep(0.01)
        second = post()
        assert first.result().status_code == 200
    assert second.status_code == 409 and second.json()["code"] == "DUPLICATE_REQUEST"

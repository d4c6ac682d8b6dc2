"""Debit EMI and Credit EMI checkouts through the saga (service + steps + the real sandbox):
the offer is discovered and validated with Plural before any order, exactly to the paisa; what
cannot go on fails with its code and leaves nothing at Plural."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from pydantic import ValidationError

from orchestrator.domain import emi
from orchestrator.plural import errors
from orchestrator.merchant.schemas import CheckoutIn, DiscoveryIn
from tests.conftest import ledger
from tests.seeds import emi_samples

HDFC_DC = "4690478199123123"      # Debit EMI sample card
ICICI_DC = "6000000060200000"     # Debit EMI sample card
HDFC_DC_DECLINED = "5212340000000011"
HDFC_CC = "4690000046910000"      # Credit EMI sample card, native OTP
PNB_CC = "4166440000000018"       # the bank page
INDUSIND_CC = "4147670000000014"  # the bank page
MOBILE = "9876543210"


def debit(number=HDFC_DC, mobile=MOBILE):
    card = {"number": number}
    if mobile is not None:
        card["registered_mobile_number"] = mobile
    return card


def credit(number):
    return {"number": number, "name": "Kevin Bob", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}


def body(method, card, issuer, tenure, amount, expected=None, pre_auth=False, **extra):
    emi_in = {"issuer_id": issuer, "tenure_id": tenure}
    if expected is not None:
        emi_in["expected_monthly_emi"] = {"value": expected, "currency": "INR"}
    return {"merchant_order_reference": f"emi-{uuid.uuid4().hex[:12]}", "payment_method": method,
            "amount": {"value": amount, "currency": "INR"}, "pre_auth": pre_auth, "card": card, "emi": emi_in, **extra}


def start(h, data):
    row, created = h.service.create(CheckoutIn.model_validate(data))
    assert created and row.state == "QUOTING"
    h.drain()
    return h.deps.repo.get(row.id)


def bank_page(h, c, approve=True):
    token = parse_qs(urlparse(c.challenge_url).query)["token"][0]
    answer = requests.post(f"{h.sandbox_url}/sandbox/acs/{c.plural_payment_id}/{'approve' if approve else 'decline'}",
                           data={"token": token}, allow_redirects=False, timeout=5)
    assert answer.status_code == 303
    return {k: v[0] for k, v in parse_qs(urlparse(answer.headers["location"]).query).items()}


def back_from_the_bank(h, c, approve=True):
    fields = bank_page(h, c, approve)
    answer = h.inbound.callback(fields)
    assert answer.status in (200, 303)
    h.drain()
    return fields, h.deps.repo.get(c.id)


def payment_at_plural(h, c):
    return h.deps.plural.get_order(c.plural_order_id).payments[-1]


def nothing_at_plural(h, c):
    with pytest.raises(errors.NotFound):
        h.deps.plural.get_order_by_reference(c.merchant_order_reference)
    assert not [e for e in ledger(h.sandbox_url) if e.get("merchant_order_reference") == c.merchant_order_reference]


# --- Debit EMI ----------------------------------------------------------------------------

def test_debit_emi_validates_the_offer_then_goes_to_the_bank_page_and_completes(harness):
    h = harness
    c = start(h, body("DEBIT_EMI", debit(), "7", "1", 1200000, expected=410713))
    assert c.state == "AWAITING_REDIRECT" and c.challenge_url and c.payment_amount == 1200000
    assert [(t.from_state, t.to_state) for t in h.deps.repo.history(c.id)][:2] == [(None, "QUOTING"), ("QUOTING", "NEW")]
    payment = payment_at_plural(h, c)
    assert payment.payment_method == "DEBIT_EMI" and payment.payment_amount.value == 1200000
    assert payment.offer_data["offer_details"] == c.offer and c.offer["tenure"]["monthly_emi_amount"]["value"] == 410713
    fields, c = back_from_the_bank(h, c)
    assert "payment_status" in fields and "status" not in fields  # the Debit EMI document's signed field
    assert c.state == "COMPLETED" and c.captured_amount == 1200000


def test_debit_emi_declined_on_the_bank_page_fails(harness):
    h = harness
    c = start(h, body("DEBIT_EMI", debit(ICICI_DC), "2", "12", 1200000))
    fields, c = back_from_the_bank(h, c, approve=False)
    assert fields["payment_status"] == "FAILED"
    assert c.state == "FAILED" and c.error_code == "USER_AUTHENTICATION_FAILED"


def test_debit_emi_declined_at_the_payment_fails(harness):
    c = start(harness, body("DEBIT_EMI", debit(HDFC_DC_DECLINED), "7", "2", 1200000))
    assert c.state == "FAILED" and c.error_code == "PAYMENT_DECLINED"


def test_an_issuer_minimum_raised_after_validation_fails_the_payment_amount_limit_exceeded(harness):
    """The offer validated, then the bank's minimum went above the order before the payment: Plural
    refuses the payment and the checkout fails cleanly with the code, the card data gone."""
    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step

    h = harness
    row, _ = h.service.create(CheckoutIn.model_validate(body("DEBIT_EMI", debit(), "7", "1", 1200000)))
    while h.queue and h.queue[0][0] != Step.CREATE_PAYMENT:  # the offer validated, the order made
        step, checkout_id = h.queue.pop(0)
        runner.run(h.deps, step, checkout_id, "t")
    assert h.queue and h.deps.repo.get(row.id).offer is not None
    book = requests.get(h.sandbox_url + "/sandbox/offers", timeout=5).json()
    for issuer in book["issuers"]:
        if issuer["name"] == "HDFC DC":
            issuer["min_amount"] = 1200001
    requests.put(h.sandbox_url + "/sandbox/offers", json=book, timeout=5).raise_for_status()
    try:
        h.drain()
    finally:
        requests.put(h.sandbox_url + "/sandbox/offers", json={}, timeout=5).raise_for_status()
    c = h.deps.repo.get(row.id)
    assert c.state == "FAILED" and c.error_code == "AMOUNT_LIMIT_EXCEEDED", (c.state, c.error_code)
    assert h.deps.vault.card(c.id) is None and h.deps.plural.get_order(c.plural_order_id).payments == []


def test_debit_emi_never_uses_native_otp_even_when_the_card_has_it(harness):
    c = start(harness, body("DEBIT_EMI", debit(HDFC_DC), "7", "1", 1200000))
    assert c.state == "AWAITING_REDIRECT" and not c.native_otp
    assert not harness.deps.repo.unresolved_attempts(c.id, ["generate_otp"])


# --- Credit EMI ---------------------------------------------------------------------------

def test_credit_emi_pre_auth_with_native_otp_captures_and_refunds_the_payment_amount(harness):
    """HDFC CC's merchant-bank offer takes 50,000 off 2,000,000: the card pays 1,950,000."""
    h = harness
    c = start(h, body("CREDIT_EMI", credit(HDFC_CC), "6", "1", 2000000, expected=671786, pre_auth=True))
    assert c.state == "AWAITING_OTP" and c.payment_amount == 1950000
    h.service.submit_otp(c.id, "123456")
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "AUTHORIZED" and c.authorized_amount == 1950000
    h.service.deliver(c.id, None)
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "COMPLETED" and c.captured_amount == 1950000
    refund, _ = h.service.refund(c.id, None, None)
    h.drain()
    assert refund.amount_value == 1950000
    assert h.deps.repo.get(c.id).refunded_amount == 1950000
    kinds = [(e["kind"], (e.get("amount") or {}).get("value")) for e in ledger(h.sandbox_url, c.plural_order_id)]
    assert ("CAPTURED", 1950000) in kinds and not [k for k in kinds if k[1] == 2000000 and k[0] != "ORDER_CREATED"]


def test_credit_emi_without_native_otp_uses_the_bank_page_with_a_brand_offer(harness):
    """PNB CC's brand tenure on redmi_1: 10 % off, 5 % INSTANT subvention: a loan of 1,714,286
    at 586,734 a month, and the card pays 1,800,000 (the loan after instant discounts)."""
    h = harness
    product = [{"product_code": "redmi_1", "product_amount": {"value": 2000000, "currency": "INR"}}]
    c = start(h, body("CREDIT_EMI", credit(PNB_CC), "25", "1", 2000000, expected=586734, product_details=product))
    assert c.state == "AWAITING_REDIRECT" and c.payment_amount == 1800000
    view = h.service.view(c)["emi"]["offer"]
    assert (view["loan_amount"]["value"], view["monthly_emi_amount"]["value"], view["emi_type"],
            view["subvention_amount"]["value"], view["discount_amount"]["value"]) == (1714286, 586734, "NO_COST",
                                                                                      85714, 200000)
    _fields, c = back_from_the_bank(h, c)
    assert c.state == "COMPLETED" and c.captured_amount == 1800000


def test_a_cart_coupon_goes_on_the_order_and_lowers_the_payment(harness):
    h = harness
    c = start(h, body("CREDIT_EMI", credit(INDUSIND_CC), "23", "2", 1200000,
                      cart_coupon_discount_amount={"value": 100000, "currency": "INR"}))
    assert c.payment_amount == 1100000
    assert c.offer["tenure"]["monthly_emi_amount"]["value"] == emi.monthly_instalment(1100000, 16, 6)
    order = h.deps.plural.get_order(c.plural_order_id)
    assert order.model_extra["cart_coupon_discount_amount"] == {"value": 100000, "currency": "INR"}


def test_the_checkout_shows_the_chosen_offer(harness):
    h = harness
    c = start(h, body("DEBIT_EMI", debit(), "7", "1", 1200000, expected=410713))
    out = h.service.view(c)
    assert out["payment_method"] == "DEBIT_EMI" and out["payment_amount"]["value"] == 1200000
    offer = out["emi"]["offer"]
    assert offer["issuer"] == {"id": "7", "name": "HDFC DC", "issuer_type": "DC_BANK"}
    assert offer["tenure"]["months"] == 3 and offer["interest_rate_percentage"] == 16
    assert (offer["monthly_emi_amount"]["value"], offer["total_emi_amount"]["value"], offer["interest_amount"]["value"],
            offer["processing_fee"]["value"], offer["loan_amount"]["value"], offer["emi_type"]) == (
        410713, 1232139, 32139, 19900, 1200000, "STANDARD")
    assert out["emi"]["choice"]["expected_monthly_emi"] == {"value": 410713, "currency": "INR"}


# --- what cannot go on: FAILED with its code, nothing at Plural -------------------------------

@pytest.mark.parametrize("method,card,issuer,tenure,amount,expected,code", [
    ("CREDIT_EMI", credit(INDUSIND_CC), "99", "1", 1200000, None, "ISSUER_NOT_OFFERED"),
    ("CREDIT_EMI", credit(INDUSIND_CC), "23", "9", 1200000, None, "TENURE_NOT_OFFERED"),
    ("CREDIT_EMI", credit(INDUSIND_CC), "23", "1", 1200000, 410714, "OFFER_CHANGED"),  # tampered by a paisa
    ("CREDIT_EMI", credit(INDUSIND_CC), "23", "1", 1200000, 1, "OFFER_CHANGED"),
    ("CREDIT_EMI", credit(PNB_CC), "23", "1", 1200000, None, "CARD_ISSUER_MISMATCH"),
    ("DEBIT_EMI", debit(ICICI_DC), "7", "1", 1200000, None, "CARD_ISSUER_MISMATCH"),
    ("CREDIT_EMI", credit(HDFC_CC), "6", "1", 1000000, None, "ISSUER_NOT_OFFERED"),  # below HDFC CC's minimum
    ("DEBIT_EMI", debit(HDFC_DC), "7", "1", 100000, None, "ISSUER_NOT_OFFERED"),     # below HDFC DC's minimum
    ("CREDIT_EMI", credit(INDUSIND_CC), "23", "1", 100, None, "ISSUER_NOT_OFFERED"),  # Rs 1: below every minimum
])
def test_an_offer_that_cannot_go_on_fails_with_its_code_and_makes_no_order(harness, method, card, issuer, tenure,
                                                                          amount, expected, code):
    h = harness
    c = start(h, body(method, card, issuer, tenure, amount, expected))
    assert c.state == "FAILED" and c.error_code == code, (c.error_code, c.error_message)
    assert c.plural_order_id is None and c.offer is None
    assert h.deps.vault.card(c.id) is None
    nothing_at_plural(h, c)


@pytest.mark.parametrize("change", [
    lambda b: b["card"].pop("registered_mobile_number"),
    lambda b: b["card"].update(registered_mobile_number="12345"),
    lambda b: b["card"].update(registered_mobile_number="5876543210"),
    lambda b: b.pop("emi"),
    lambda b: b.update(product_details=[{"product_code": "x", "product_amount": {"value": 1200001, "currency": "INR"}}]),
    lambda b: b.update(product_details=[{"product_code": "x", "product_amount": {"value": -1, "currency": "INR"}}]),
    lambda b: b.update(product_details=[{"product_code": "a", "product_amount": {"value": 700000, "currency": "INR"}},
                                        {"product_code": "b", "product_amount": {"value": 700000, "currency": "INR"}}]),
    lambda b: b.update(cart_coupon_discount_amount={"value": 1200000, "currency": "INR"}),
    lambda b: b.update(amount={"value": 1200000, "currency": "USD"}),
    lambda b: b["emi"].update(tenure_id="1 OR 1=1"),
    lambda b: b["emi"].update(expected_monthly_emi={"value": 0, "currency": "INR"}),
    lambda b: b["emi"].update(expected_monthly_emi={"value": 410713.5, "currency": "INR"}),
    lambda b: b.update(payment_method="CREDIT_EMI"),  # Credit EMI needs the full card
])
def test_bad_emi_input_is_refused_before_anything_is_created(change):
    data = body("DEBIT_EMI", debit(), "7", "1", 1200000)
    change(data)
    with pytest.raises(ValidationError):
        CheckoutIn.model_validate(data)


def test_emi_fields_on_a_card_checkout_are_refused():
    data = body("DEBIT_EMI", credit(HDFC_CC), "7", "1", 1200000)
    data["payment_method"] = "CARD"
    with pytest.raises(ValidationError):
        CheckoutIn.model_validate(data)


# --- discovery for the merchant ---------------------------------------------------------

def test_discovery_passes_plurals_answer_on_exactly(harness):
    found = harness.service.discover(DiscoveryIn.model_validate({"amount": {"value": 1200000, "currency": "INR"}}))
    assert found == emi_samples()[3]


def test_discovery_with_a_debit_card_lists_its_issuer(harness):
    found = harness.service.discover(DiscoveryIn.model_validate(
        {"amount": {"value": 1200000, "currency": "INR"}, "card": {"number": HDFC_DC}}))
    assert [i["name"] for i in found["issuers"]] == ["HDFC DC"]


# --- interleavings before the order ---------------------------------------------------------

def test_a_cancel_while_the_offer_is_checked_ends_cancelled_with_nothing_at_plural(harness):
    h = harness
    row, _ = h.service.create(CheckoutIn.model_validate(body("DEBIT_EMI", debit(), "7", "1", 1200000)))
    h.service.cancel(row.id)  # before check_offer ran
    h.drain()
    c = h.deps.repo.get(row.id)
    assert c.state == "CANCELLED" and c.offer is None
    nothing_at_plural(h, c)


def test_the_customer_deadline_also_bounds_the_offer_check(harness):
    h = harness
    row, _ = h.service.create(CheckoutIn.model_validate(body("CREDIT_EMI", credit(INDUSIND_CC), "23", "1", 1200000)))
    h.clock.advance(h.deps.settings.customer_action_timeout + 1)
    h.drain()
    c = h.deps.repo.get(row.id)
    assert c.state == "CANCELLED" and c.cancel_reason == "CUSTOMER_TIMEOUT"
    nothing_at_plural(h, c)


@pytest.mark.parametrize("path", ["/offer/discovery", "/offer/validate"])
def test_an_offer_call_that_fails_transiently_is_retried_then_goes_on(harness, path):
    h = harness
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "error", "path": path, "statuses": [503], "count": h.deps.settings.http_max_attempts}]},
        timeout=5).raise_for_status()  # one step run's worth of attempts
    row, _ = h.service.create(CheckoutIn.model_validate(body("DEBIT_EMI", debit(), "7", "1", 1200000)))
    h.drain()
    assert h.state(row.id) == "QUOTING" and h.deps.repo.get(row.id).step_failures == 1
    for _ in range(5):
        h.clock.advance(60)
        h.run_due()
    c = h.deps.repo.get(row.id)
    assert c.state == "AWAITING_REDIRECT" and c.offer is not None


def test_an_offer_check_that_never_gets_an_answer_needs_attention(harness):
    h = harness
    requests.put(f"{h.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "error", "path": "/offer/discovery", "statuses": [503]}]}, timeout=5).raise_for_status()
    row, _ = h.service.create(CheckoutIn.model_validate(body("DEBIT_EMI", debit(), "7", "1", 1200000)))
    h.drain()
    for _ in range(h.deps.settings.step_max_attempts + 1):
        h.clock.advance(60)
        h.run_due()
    c = h.deps.repo.get(row.id)
    assert c.state == "NEEDS_ATTENTION" and c.attention_from == "QUOTING"
    nothing_at_plural(h, c)
    requests.delete(f"{h.sandbox_url}/sandbox/faults", timeout=5)
    # the card left the vault when the checkout got stuck: a retry ends it cleanly, nothing half-made
    h.service.operator(c.id, "retry", who="test")
    h.drain()
    c = h.deps.repo.get(c.id)
    assert c.state == "FAILED" and c.error_code == "CARD_DATA_EXPIRED"
    nothing_at_plural(h, c)


def test_a_webhook_settles_an_emi_payment(harness):
    from tests.inbound.test_webhooks import signed

    h = harness
    c = start(h, body("DEBIT_EMI", debit(), "7", "1", 1200000))
    bank_page(h, c)
    order = h.deps.plural.get_order(c.plural_order_id).model_dump(mode="json", exclude_none=True)
    payload, headers = signed(h, "ORDER_PROCESSED", order)
    h.inbound.webhook(payload, headers)
    h.process_webhooks()
    c = h.deps.repo.get(c.id)
    assert c.state == "COMPLETED" and c.captured_amount == 1200000
    assert [t for t in h.deps.repo.history(c.id) if t.to_state == "COMPLETED"][0].source == "webhook"


def test_the_bank_page_shows_the_emi_the_customer_agrees_to(harness):
    c = start(harness, body("DEBIT_EMI", debit(), "7", "1", 1200000))
    page = requests.get(c.challenge_url, timeout=5).text
    assert "Debit EMI" in page and "HDFC DC, 3 Months at 16 %" in page and "INR 4107.13" in page


def test_the_same_reference_with_another_emi_choice_is_a_conflict(harness):
    from orchestrator.merchant.errors import CheckoutError

    first = body("DEBIT_EMI", debit(), "7", "1", 1200000)
    row, _ = harness.service.create(CheckoutIn.model_validate(first))
    again, created = harness.service.create(CheckoutIn.model_validate(first))
    assert again.id == row.id and not created
    for change in ({"emi": {"issuer_id": "7", "tenure_id": "2"}},
                   {"cart_coupon_discount_amount": {"value": 100, "currency": "INR"}}):
        with pytest.raises(CheckoutError) as conflict:
            harness.service.create(CheckoutIn.model_validate({**first, **change}))
        assert conflict.value.code == "REFERENCE_CONFLICT"


def test_discovery_says_unavailable_when_plural_does_not_answer(harness):
    from orchestrator.merchant.errors import CheckoutError

    requests.put(f"{harness.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "error", "path": "/offer/discovery", "statuses": [503]}]}, timeout=5).raise_for_status()
    with pytest.raises(CheckoutError) as down:
        harness.service.discover(DiscoveryIn.model_validate({"amount": {"value": 1200000, "currency": "INR"}}))
    assert (down.value.status, down.value.code, down.value.details) == (503, "UNAVAILABLE", {"unavailable": "gateway"})


def test_discovery_passes_plurals_refusal_on_as_a_422(harness):
    from orchestrator.merchant.errors import CheckoutError

    requests.put(f"{harness.sandbox_url}/sandbox/faults", json={"rules": [
        {"kind": "error", "path": "/offer/discovery", "statuses": [400]}]}, timeout=5).raise_for_status()
    with pytest.raises(CheckoutError) as refused:
        harness.service.discover(DiscoveryIn.model_validate({"amount": {"value": 1200000, "currency": "INR"}}))
    assert refused.value.status == 422

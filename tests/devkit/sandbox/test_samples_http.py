"""Every request sample in Plural's documents, sent as it is to the sandbox over HTTP, is accepted
and answered in the shape of the documents' sample responses."""

from __future__ import annotations

import copy
import time
import uuid

import pytest
import requests

from orchestrator.plural import models as m
from devkit.sandbox.gateway import SEED_SAMPLE_TOKEN
from tests.seeds import card_samples, emi_samples, find

HEADERS = {"Authorization": f"Bearer {SEED_SAMPLE_TOKEN}", "Content-Type": "application/json",
           "Request-ID": "c17ce30f-f88e-4f81-ada1-c3b4909ed235", "Request-Timestamp": "2024-07-09T07:57:08.022Z"}


def post(base, path, body, method="POST", headers=HEADERS):
    return requests.request(method, base + path, json=body, headers=headers, timeout=5)


def unique(sample: dict, key: str = "merchant_order_reference") -> dict:
    """The same sample with a fresh reference, so repeated runs do not meet the idempotency rule."""
    out = copy.deepcopy(sample)
    out[key] = f"{out[key]}-{uuid.uuid4().hex[:8]}"
    return out


def new_order(base, amount, pre_auth=False):
    body = unique(find(lambda s: s.get("merchant_order_reference") == 112345, card_samples())[0])
    body["order_amount"]["value"] = amount
    body["pre_auth"] = pre_auth
    answer = post(base, "/api/pay/v1/orders", body)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


@pytest.mark.parametrize("sample", find(lambda s: "client_id" in s))
def test_token_samples_are_accepted(sandbox, sample):
    answer = post(sandbox.url, "/api/auth/v1/token", sample, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    assert set(answer.json()) == {"access_token", "expires_at"}  # as Plural's Generate Token reference
    expiry = m.TokenResponse.model_validate(answer.json()).expiry_epoch(0.0)
    assert abs(expiry - (time.time() + 3600)) < 60


@pytest.mark.parametrize("sample", find(lambda s: s.get("merchant_order_reference") == 112345))
def test_create_order_samples_are_accepted_with_integer_reference(sandbox, sample):
    sample = copy.deepcopy(sample)
    sample["merchant_order_reference"] = int(str(sample["merchant_order_reference"]) + str(uuid.uuid4().int)[:8])
    answer = post(sandbox.url, "/api/pay/v1/orders", sample)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["status"] == "CREATED" and data["payments"] == []
    assert data["merchant_order_reference"] == str(sample["merchant_order_reference"])
    echoed_when_sent = {"notes", "callback_url", "failure_callback_url", "purchase_details",
                        "cart_coupon_discount_amount"}
    for response in find(lambda s: "data" in s and s["data"]["status"] == "CREATED" and not s["data"]["payments"]):
        assert set(response["data"]) - (echoed_when_sent - set(sample)) <= set(data)


def test_card_payment_sample_is_accepted(sandbox):
    sample = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "CARD")[0]
    order = new_order(sandbox.url, sample["payments"][0]["payment_amount"]["value"])
    answer = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/payments", sample)
    assert answer.status_code == 200, answer.text
    data = m.OrderEnvelope.model_validate(answer.json()).data
    assert data.status == "PENDING" and data.challenge_url
    assert data.payments[0].status == "PENDING"
    assert data.payments[0].payment_option["card_data"]["network_name"] == "VISA"


@pytest.mark.parametrize("index", [0, 1])
def test_debit_emi_payment_samples_are_accepted(sandbox, index):
    sample = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "DEBIT_EMI")[index]
    order = new_order(sandbox.url, sample["payments"][0]["payment_amount"]["value"])
    answer = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/payments", sample)
    assert answer.status_code == 200, answer.text
    payment = answer.json()["data"]["payments"][0]
    assert payment["payment_method"] == "DEBIT_EMI" and payment["id"].endswith("-de-a")
    assert payment["offer_data"] == sample["payments"][0]["offer_data"]


def test_card_details_sample_answers_like_the_document(sandbox):
    sample = find(lambda s: "card_details" in s and "amount" in s)[0]
    answer = post(sandbox.url, "/api/pay/v1/getCardDetails", sample)
    assert answer.status_code == 200
    expected = find(lambda s: "card_payment_details" in s)[0]
    got = answer.json()["card_payment_details"][0]
    for key in ("card_network", "card_issuer", "card_type", "is_native_otp_supported", "country_code"):
        assert got[key] == expected["card_payment_details"][0][key]


def test_otp_samples_without_authorization_are_accepted(sandbox):
    sample = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "CARD")[0]
    order = new_order(sandbox.url, sample["payments"][0]["payment_amount"]["value"])
    payment_id = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/payments", sample
                      ).json()["data"]["payments"][0]["id"]
    plain = {"accept": "application/json", "content-type": "application/json"}
    generate = dict(find(lambda s: set(s) == {"payment_id"})[0], payment_id=payment_id)
    answer = post(sandbox.url, "/api/pay/v1/otp/generate", generate, headers=plain)
    assert answer.status_code == 200
    assert set(answer.json()) == set(find(lambda s: "next" in s and "status" not in s)[0])
    # the submit sample's OTP 1234 is not the sandbox OTP: accepted, answered as a wrong OTP
    submit = dict(find(lambda s: set(s) == {"payment_id", "otp"})[0], payment_id=payment_id)
    wrong = post(sandbox.url, "/api/pay/v1/otp/submit", submit, headers=plain)
    assert wrong.status_code == 422 and wrong.json()["code"] == "INVALID_OTP"
    right = post(sandbox.url, "/api/pay/v1/otp/submit", dict(submit, otp=123456), headers=plain)
    assert right.json() == find(lambda s: s == {"status": "SUCCESS"})[0]


def test_capture_samples_are_accepted(sandbox):
    for sample in find(lambda s: "merchant_capture_reference" in s):
        order = new_order(sandbox.url, 1200000, pre_auth=True)
        card = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "CARD")[0]
        card = copy.deepcopy(card)
        card["payments"][0]["payment_amount"]["value"] = 1200000
        payment = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/payments", card
                       ).json()["data"]["payments"][0]
        post(sandbox.url, "/api/pay/v1/otp/generate", {"payment_id": payment["id"]})
        post(sandbox.url, "/api/pay/v1/otp/submit", {"payment_id": payment["id"], "otp": "123456"})
        answer = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/capture",
                      unique(sample, "merchant_capture_reference"), method="PUT")
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        captured = sample["capture_amount"]["value"]
        assert data["status"] == ("PROCESSED" if captured == 1200000 else "PARTIALLY_CAPTURED")
        assert data["payments"][0]["capture_data"][0]["capture_amount"]["value"] == captured


def test_offer_discovery_sample_gives_the_document_figures(sandbox):
    request, response = emi_samples()[2], emi_samples()[3]
    answer = post(sandbox.url, "/api/affordability/v1/offer/discovery", request)
    assert answer.status_code == 200
    assert figures(answer.json()) == figures(response)


def test_offer_validation_sample_is_eligible(sandbox):
    request = find(lambda s: "offer_data" in s and "payments" not in s)[0]
    answer = post(sandbox.url, "/api/affordability/v1/offer/validate", request)
    assert answer.status_code == 200
    assert answer.json() == {"code": "ELIGIBLE", "message": "Offer is Eligible"}


FIGURES = ("loan_amount", "net_payment_amount", "monthly_emi_amount", "total_emi_amount", "interest_amount",
           "total_discount_amount", "total_subvention_amount")


def figures(discovery: dict) -> list:
    out = []
    for issuer in discovery["issuers"]:
        for t in issuer["tenures"]:
            out.append((issuer["id"], issuer["name"], t["tenure_id"], t["tenure_value"], t["emi_type"],
                        t["interest_rate_percentage"], t["processing_fee_details"]["amount"]["value"],
                        tuple((t.get(k) or {}).get("value") for k in FIGURES),
                        tuple(sorted((p["program_type"], p["offer_id"]) for p in t["issuer_offer_parameters"]))))
    return out


def test_an_emi_payment_below_the_issuers_minimum_is_refused_amount_limit_exceeded(sandbox):
    """Create Payment checks the offer again: an issuer whose minimum is above the order refuses it
    with Plural's documented code for an amount out of limits, and no payment is made."""
    sample = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "DEBIT_EMI")[0]
    amount = sample["payments"][0]["payment_amount"]["value"]
    book = requests.get(sandbox.url + "/sandbox/offers", timeout=5).json()
    for issuer in book["issuers"]:
        if issuer["name"] == "HDFC DC":
            issuer["min_amount"] = amount + 1
    requests.put(sandbox.url + "/sandbox/offers", json=book, timeout=5).raise_for_status()
    try:
        order = new_order(sandbox.url, amount)
        answer = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/payments", sample)
        assert answer.status_code == 422 and answer.json()["code"] == "AMOUNT_LIMIT_EXCEEDED", answer.text
        got = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}", None, method="GET").json()["data"]
        assert got["payments"] == []
    finally:
        requests.put(sandbox.url + "/sandbox/offers", json={}, timeout=5).raise_for_status()


def test_the_card_payment_samples_device_info_is_kept_with_the_payment(sandbox):
    sample = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "CARD")[0]
    order = new_order(sandbox.url, sample["payments"][0]["payment_amount"]["value"])
    answer = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/payments", sample)
    assert answer.status_code == 200, answer.text
    entries = requests.get(sandbox.url + "/sandbox/ledger", params={"order_id": order["order_id"]},
                           timeout=5).json()["entries"]
    (made,) = [e for e in entries if e["kind"] == "PAYMENT_CREATED"]
    assert made["device_info"] == sample["payments"][0]["device_info"]


@pytest.mark.parametrize("device_info", ["browser", {}, {"browser_screen_height": 768}, {"device_channel": ""}])
def test_a_malformed_device_info_is_refused_invalid_request(sandbox, device_info):
    sample = copy.deepcopy(find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "CARD")[0])
    sample["payments"][0]["device_info"] = device_info
    order = new_order(sandbox.url, sample["payments"][0]["payment_amount"]["value"])
    answer = post(sandbox.url, f"/api/pay/v1/orders/{order['order_id']}/payments", sample)
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST", answer.text
    assert answer.json()["additional_error_details"]["source"].startswith("device_info")

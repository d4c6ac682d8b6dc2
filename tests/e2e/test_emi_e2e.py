"""EMI checkouts end to end: real Redis, worker, beat, API and sandbox as processes; the customer's
browser follows the bank page's signed redirect back through the API."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from devkit.demo import pick_offer
from devkit.merchant_client import OrchestratorError
from tests.e2e.test_checkout_e2e import api, ledger, stack  # noqa: F401 - the same module-scoped stack fixtures

pytestmark = pytest.mark.e2e

DEBIT = {"number": "4690478199123123", "registered_mobile_number": "9876543210"}
CREDIT_OTP = {"number": "4690000046910000", "name": "Kevin Bob", "cvv": "123", "expiry_month": "12",
              "expiry_year": "2030"}
CREDIT_PAGE = {**CREDIT_OTP, "number": "4166440000000018"}
REDMI = [{"product_code": "redmi_1", "product_amount": {"value": 2000000, "currency": "INR"}}]


def checkout(api, method, card, issuer, tenure, amount, *, expected=None, pre_auth=False, **terms):
    emi = {"issuer_id": issuer, "tenure_id": tenure}
    if expected is not None:
        emi["expected_monthly_emi"] = {"value": expected, "currency": "INR"}
    c = api.create_checkout(amount=amount, card=card, payment_method=method, pre_auth=pre_auth, emi=emi,
                            merchant_order_reference=f"emi-{uuid.uuid4().hex[:14]}", **terms)
    return api.wait(c["id"], {"AWAITING_OTP", "AWAITING_REDIRECT", "FAILED", "CANCELLED"}, timeout=30)


def through_the_bank(url: str, approve: bool) -> requests.Response:
    """The customer's browser: press the button, follow the signed redirect to our return URL."""
    page = urlparse(url)
    token = parse_qs(page.query)["token"][0]
    bank = requests.post(f"{page.scheme}://{page.netloc}{page.path}/{'approve' if approve else 'decline'}",
                         data={"token": token}, allow_redirects=False, timeout=10)
    assert bank.status_code == 303
    back = requests.get(bank.headers["location"], allow_redirects=False, timeout=10)
    assert "payment_status=" in bank.headers["location"] and "signature=" in bank.headers["location"]
    return back


def test_debit_emi_discovered_chosen_approved_and_completed(api, stack):
    found = api.discover_offers(amount=1200000, card_number=DEBIT["number"])
    issuer, tenure = pick_offer(found, "HDFC DC", 3)
    assert tenure["monthly_emi_amount"]["value"] == 410713
    c = checkout(api, "DEBIT_EMI", DEBIT, issuer["id"], tenure["tenure_id"], 1200000,
                 expected=tenure["monthly_emi_amount"]["value"])
    assert c["status"] == "AWAITING_REDIRECT" and c["emi"]["offer"]["monthly_emi_amount"]["value"] == 410713
    back = through_the_bank(c["next_action"]["url"], approve=True)
    assert back.status_code == 200  # verified: the API shows the customer its page
    done = api.wait(c["id"], timeout=30)
    assert done["status"] == "COMPLETED" and done["captured_amount"]["value"] == 1200000
    assert ledger(stack, done["plural_order_id"]) == ["ORDER_CREATED", "PAYMENT_CREATED", "AUTHORIZED", "CAPTURED"]


def test_debit_emi_declined_on_the_bank_page(api):
    c = checkout(api, "DEBIT_EMI", DEBIT, "7", "2", 1200000)
    through_the_bank(c["next_action"]["url"], approve=False)
    done = api.wait(c["id"], timeout=30)
    assert done["status"] == "FAILED" and done["error"]["code"] == "USER_AUTHENTICATION_FAILED"


def test_credit_emi_pre_auth_with_otp_is_captured_and_refunded_at_the_payment_amount(api, stack):
    c = checkout(api, "CREDIT_EMI", CREDIT_OTP, "6", "1", 2000000, expected=671786, pre_auth=True)
    assert c["status"] == "AWAITING_OTP" and c["payment_amount"]["value"] == 1950000
    api.submit_otp(c["id"], "123456")
    held = api.wait(c["id"], {"AUTHORIZED", "FAILED"}, timeout=30)
    assert held["status"] == "AUTHORIZED" and held["authorized_amount"]["value"] == 1950000
    api.deliver(c["id"])
    done = api.wait(c["id"], timeout=30)
    assert done["status"] == "COMPLETED" and done["captured_amount"]["value"] == 1950000
    with pytest.raises(OrchestratorError) as too_much:
        api.refund(c["id"], 1950001)
    assert too_much.value.status in (409, 422)
    api.refund(c["id"])
    deadline = time.monotonic() + 30
    while api.get_checkout(c["id"])["refunded_amount"]["value"] != 1950000:
        assert time.monotonic() < deadline, "the refund never settled"
        time.sleep(0.2)


def test_credit_emi_no_cost_brand_offer_on_the_bank_page(api):
    c = checkout(api, "CREDIT_EMI", CREDIT_PAGE, "25", "1", 2000000, expected=586734, product_details=REDMI)
    assert c["status"] == "AWAITING_REDIRECT"
    offer = c["emi"]["offer"]
    assert (offer["emi_type"], offer["loan_amount"]["value"], offer["payment_amount"]["value"]) == (
        "NO_COST", 1714286, 1800000)
    through_the_bank(c["next_action"]["url"], approve=True)
    done = api.wait(c["id"], timeout=30)
    assert done["status"] == "COMPLETED" and done["captured_amount"]["value"] == 1800000


def test_a_tampered_monthly_emi_fails_before_any_order(api, stack):
    c = checkout(api, "CREDIT_EMI", CREDIT_PAGE, "23", "1", 1200000, expected=410714)
    assert c["status"] == "FAILED" and c["error"]["code"] == "OFFER_CHANGED" and c["plural_order_id"] is None
    entries = requests.get(f"{stack.sandbox_url}/sandbox/ledger", timeout=5).json()["entries"]
    assert not [e for e in entries if e.get("merchant_order_reference") == c["merchant_order_reference"]]


@pytest.mark.parametrize("change,field", [
    (lambda b: b["card"].pop("registered_mobile_number"), "registered_mobile_number"),
    (lambda b: b["card"].update(registered_mobile_number="98765"), "registered_mobile_number"),
    (lambda b: b.update(product_details=[{"product_code": "x", "product_amount": {"value": 1300000}}]), "product"),
    (lambda b: b.pop("emi"), "emi"),
])
def test_bad_emi_input_is_a_400_and_creates_nothing(api, change, field):
    body = {"amount": {"value": 1200000, "currency": "INR"}, "payment_method": "DEBIT_EMI", "card": dict(DEBIT),
            "emi": {"issuer_id": "7", "tenure_id": "1"}, "merchant_order_reference": f"bad-{uuid.uuid4().hex[:12]}"}
    change(body)
    with pytest.raises(OrchestratorError) as refused:
        api._call("POST", "/v1/checkouts", body)
    assert refused.value.status == 400 and field in refused.value.body["message"]


def test_no_card_number_or_mobile_in_any_log_or_the_database(stack):
    logs = b"".join(p.read_bytes() for p in Path(stack.log_dir).glob("*.log"))
    assert logs
    for secret in (DEBIT["number"], CREDIT_OTP["number"], CREDIT_PAGE["number"], DEBIT["registered_mobile_number"]):
        assert secret.encode() not in logs
    db = b"".join(p.read_bytes() for p in Path(stack.data_dir).glob("orchestrator.store*"))
    assert DEBIT["number"].encode() not in db and CREDIT_OTP["number"].encode() not in db

import copy

import pytest

from orchestrator.sandbox import offers
from tests.sandbox.test_samples_http import figures
from tests.seeds import emi_samples, find


def test_second_discovery_sample_figures_for_the_order_it_describes():
    """The seed's second response is about 2,000,000 paise of product redmi_1 (its request is not)."""
    expected = emi_samples()[5]
    got = offers.discover({"order_amount": {"value": 2000000, "currency": "INR"},
                           "product_details": [{"product_code": "redmi_1",
                                                "product_amount": {"value": 2000000, "currency": "INR"}}]})
    pnb = {"issuers": [i for i in got["issuers"] if i["name"] == "PNB CC"]}
    assert figures(pnb) == figures(expected)


def test_brand_tenures_need_the_brand_product():
    got = offers.discover({"order_amount": {"value": 2000000, "currency": "INR"}})
    pnb = next(i for i in got["issuers"] if i["name"] == "PNB CC")
    assert all(t["issuer_offer_parameters"][0]["program_type"] == "BANK_EMI" for t in pnb["tenures"])


def test_debit_card_issuers_are_listed_only_for_a_named_card():
    anonymous = offers.discover({"order_amount": {"value": 1200000, "currency": "INR"}})
    assert all(i["issuer_type"] == "CC_BANK" for i in anonymous["issuers"])
    named = offers.discover({"order_amount": {"value": 1200000, "currency": "INR"},
                             "payment_option": {"card_details": {"card_number": "4690478199123123"}}})
    assert [i["name"] for i in named["issuers"]] == ["HDFC DC"]


VALIDATION = find(lambda s: "offer_data" in s and "payments" not in s)[0]


def test_validation_sample_is_eligible():
    offers.validate(VALIDATION)


@pytest.mark.parametrize("path,value", [
    (("offer_data", "offer_details", "tenure", "monthly_emi_amount", "value"), 600000),
    (("offer_data", "offer_details", "tenure", "loan_amount", "value"), 2000000),
    (("offer_data", "offer_details", "tenure", "interest_rate_percentage"), 12),
    (("payment_amount", "value"), 2000000),
    (("payment_option", "card_details", "card_number"), "4012001037141112"),
    (("offer_data", "offer_details", "tenure", "tenure_id"), "99"),
])
def test_tampered_offers_are_not_eligible(path, value):
    request = copy.deepcopy(VALIDATION)
    node = request
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(offers.NotEligible):
        offers.validate(request)


def test_validation_over_http_refuses_with_offer_not_eligible(client, sandbox):
    import requests

    request = copy.deepcopy(VALIDATION)
    request["offer_data"]["offer_details"]["tenure"]["monthly_emi_amount"]["value"] = 1
    token = client.requestor.tokens.get()
    answer = requests.post(sandbox.url + "/api/affordability/v1/offer/validate", json=request,
                           headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 422 and answer.json()["code"] == "OFFER_NOT_ELIGIBLE"

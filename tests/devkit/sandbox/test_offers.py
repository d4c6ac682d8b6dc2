"""The sandbox's offer engine: Plural's samples figure for figure, exact validation, limits, bad input."""

import copy
from decimal import Decimal

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain import emi  # our side reads the sandbox's offers as the orchestrator would
from devkit.sandbox import offers
from tests.seeds import emi_samples, find

REDMI = [{"product_code": "redmi_1", "product_amount": {"value": 2000000, "currency": "INR"}}]
VALIDATION = find(lambda s: "offer_data" in s and "payments" not in s)[0]
PAYMENT_SAMPLES = find(lambda s: "payments" in s and s["payments"][0]["payment_method"] == "DEBIT_EMI")


def _without_empty_discount(discovery: dict) -> dict:
    out = copy.deepcopy(discovery)
    for issuer in out["issuers"]:
        for tenure in issuer["tenures"]:
            if tenure.get("discount") == {}:
                del tenure["discount"]
    return out


def test_first_discovery_sample_is_reproduced_exactly():
    assert offers.discover(emi_samples()[2]) == emi_samples()[3]


def test_second_discovery_sample_is_reproduced_for_the_order_it_describes():
    """The seed's second response is about 2,000,000 paise of product redmi_1 (its request is not).
    Its bank tenures omit the empty ``discount`` the first sample shows; every other field matches."""
    got = offers.discover({"order_amount": {"value": 2000000, "currency": "INR"}, "product_details": REDMI})
    pnb = {"issuers": [i for i in got["issuers"] if i["name"] == "PNB CC"]}
    assert _without_empty_discount(pnb) == _without_empty_discount(emi_samples()[5])


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


def test_validation_sample_is_eligible():
    offers.validate(VALIDATION)


@pytest.mark.parametrize("sample", PAYMENT_SAMPLES, ids=["hdfc-dc-3", "icici-dc-36"])
def test_create_payment_samples_validate(sample):
    item = sample["payments"][0]
    offers.validate({"order_amount": item["payment_amount"], "payment_amount": item["payment_amount"],
                     "offer_data": item["offer_data"], "payment_option": item["payment_option"]},
                    payment_method="DEBIT_EMI")


def _hdfc_dc(amount: int, tenure_id: str = "1") -> dict:
    discovery = offers.discover({"order_amount": {"value": amount, "currency": "INR"},
                                 "payment_option": {"card_details": {"card_number": "4690478199123123"}}})
    issuer = discovery["issuers"][0]
    tenure = next(t for t in issuer["tenures"] if t["tenure_id"] == tenure_id)
    details = {k: v for k, v in issuer.items() if k not in ("tenures", "issuer_data")}
    return {"order_amount": {"value": amount, "currency": "INR"}, "payment_amount": {"value": amount, "currency": "INR"},
            "payment_method": "DEBIT_EMI", "offer_data": {"offer_details": {**details, "tenure": tenure}}}


def _plus_a_paisa(request: dict) -> dict:
    out = copy.deepcopy(request)
    t = out["offer_data"]["offer_details"]["tenure"]
    t["monthly_emi_amount"]["value"] += 1
    for key in ("total_emi_amount", "net_payment_amount"):
        t[key]["value"] += t["tenure_value"]
    t["interest_amount"]["value"] += t["tenure_value"]
    return out


def test_the_named_sample_exception_is_exactly_one_case():
    """The create-payment sample's paisa is accepted for HDFC DC 3 months on 1,200,000 only."""
    offers.validate(_hdfc_dc(1200000), payment_method="DEBIT_EMI")
    offers.validate(_plus_a_paisa(_hdfc_dc(1200000)), payment_method="DEBIT_EMI")
    for other in (_hdfc_dc(1300000), _hdfc_dc(1200000, "2")):
        with pytest.raises(offers.NotEligible):
            offers.validate(_plus_a_paisa(other), payment_method="DEBIT_EMI")


TENURE = ("offer_data", "offer_details", "tenure")


@pytest.mark.parametrize("path,value", [
    (TENURE + ("monthly_emi_amount", "value"), 671787),
    (TENURE + ("monthly_emi_amount", "value"), 671785),
    (TENURE + ("monthly_emi_amount", "currency"), "USD"),
    (TENURE + ("loan_amount", "value"), 2000000),
    (TENURE + ("total_emi_amount", "value"), 2015359),
    (TENURE + ("net_payment_amount", "value"), 2015357),
    (TENURE + ("interest_amount", "value"), 65359),
    (TENURE + ("total_discount_amount", "value"), 50001),
    (TENURE + ("processing_fee_details", "amount", "value"), 0),
    (TENURE + ("interest_rate_percentage",), 12),
    (TENURE + ("interest_rate_percentage",), 20.01),
    (TENURE + ("tenure_value",), 6),
    (TENURE + ("emi_type",), "NO_COST"),
    (TENURE + ("total_subvention_amount",), {"value": 100, "currency": "INR"}),
    (("payment_amount", "value"), 2000000),
])
def test_every_figure_is_compared_exactly(path, value):
    with pytest.raises(offers.NotEligible) as refused:
        offers.validate(_tampered(path, value))
    assert refused.value.code == "OFFER_MISMATCH"


def _tampered(path: tuple, value) -> dict:
    """The validation sample with one field changed."""
    request = copy.deepcopy(VALIDATION)
    node = request
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return request


@pytest.mark.parametrize("path,value,code", [
    (("payment_option", "card_details", "card_number"), "4012001037141112", "CARD_ISSUER_MISMATCH"),
    (TENURE + ("tenure_id",), "99", "OFFER_NOT_FOUND"),
    (("offer_data", "offer_details", "id"), "999", "OFFER_NOT_FOUND"),
    (("payment_method",), "DEBIT_EMI", "OFFER_NOT_FOUND"),
])
def test_refusals_name_their_reason(path, value, code):
    with pytest.raises(offers.NotEligible) as refused:
        offers.validate(_tampered(path, value))
    assert refused.value.code == code


def test_an_offer_for_an_amount_outside_the_issuers_limits_is_refused():
    request = copy.deepcopy(VALIDATION)
    request["order_amount"]["value"] = 1_000_000  # HDFC CC starts at 1,500,000
    with pytest.raises(offers.NotEligible) as refused:
        offers.validate(request)
    assert refused.value.code == "AMOUNT_LIMIT_EXCEEDED"  # Plural's documented code for an amount out of limits


def test_amounts_outside_an_issuers_limits_get_none_of_its_tenures():
    below = offers.discover({"order_amount": {"value": 1_499_999, "currency": "INR"}})
    above = offers.discover({"order_amount": {"value": 50_000_001, "currency": "INR"}})
    assert "HDFC CC" not in [i["name"] for i in below["issuers"]]
    assert "INDUSIND CC" in [i["name"] for i in below["issuers"]]
    assert above["issuers"] == []


def test_every_issuer_of_the_default_book_has_a_minimum_and_rs_1_gets_no_emi():
    assert all(issuer.min_amount > 0 for issuer in offers.DEFAULT_BOOK.issuers)
    for amount in (100, 299_999):  # Rs 1, and a paisa below the lowest minimum
        assert offers.discover({"order_amount": {"value": amount, "currency": "INR"}})["issuers"] == []
        card = {"payment_option": {"card_details": {"card_number": "4690478199123123"}}}  # HDFC DC
        assert offers.discover({"order_amount": {"value": amount, "currency": "INR"}, **card})["issuers"] == []
    assert "INDUSIND CC" in [i["name"] for i in offers.discover(
        {"order_amount": {"value": 300_000, "currency": "INR"}})["issuers"]]


def test_an_issuer_without_a_minimum_is_refused_by_the_book():
    with pytest.raises(ValueError):
        offers.IssuerOffer(id="1", name="NO MIN CC", issuer_type="CC_BANK", bank="HDFC", tenures=())


def test_tiny_amounts_get_no_zero_monthly_emi_and_no_negative_interest():
    book = offers.OfferBook(issuers=(offers.IssuerOffer(
        id="1", name="TINY CC", issuer_type="CC_BANK", bank="HDFC", min_amount=1,
        tenures=(offers.TenureOffer(tenure_id="1", months=36, rate=Decimal("0.5"), offer_id="1",
                                    offer_parameter_id="1"),)),))
    for amount in (1, 30, 1201, 36001):
        for issuer in offers.discover({"order_amount": {"value": amount, "currency": "INR"}}, book.issuers)["issuers"]:
            for tenure in issuer["tenures"]:
                assert tenure["monthly_emi_amount"]["value"] >= 1 and tenure["interest_amount"]["value"] >= 0


def test_a_discount_that_swallows_the_order_leaves_no_tenure():
    book = offers.OfferBook(issuers=(offers.IssuerOffer(
        id="1", name="FLAT CC", issuer_type="CC_BANK", bank="HDFC", min_amount=1,
        tenures=(offers.TenureOffer(tenure_id="1", months=3, rate=Decimal(16), offer_id="1", offer_parameter_id="1",
                                    bank_discount=50000, bank_discount_offer=("2", "3")),)),))
    assert offers.discover({"order_amount": {"value": 50000, "currency": "INR"}}, book.issuers) == {"issuers": []}


@pytest.mark.parametrize("products,coupon", [
    ([{"product_code": "redmi_1", "product_amount": {"value": 2000001, "currency": "INR"}}], None),
    ([{"product_code": "redmi_1", "product_amount": {"value": -1, "currency": "INR"}}], None),
    ([{"product_code": "redmi_1", "product_amount": {"value": "lots", "currency": "INR"}}], None),
    ([{"product_code": "a", "product_amount": {"value": 1500000}}, {"product_code": "b", "product_amount": {"value": 600000}}], None),
    ([{"product_amount": {"value": 1}}], None),
    (None, {"value": 2000000, "currency": "INR"}),
    (None, "-5"),
])
def test_impossible_products_and_coupons_are_bad_requests(products, coupon):
    request = {"order_amount": {"value": 2000000, "currency": "INR"}}
    if products is not None:
        request["product_details"] = products
    if coupon is not None:
        request["cart_coupon_discount_amount"] = coupon
    with pytest.raises(offers.BadRequest):
        offers.discover(request)


def test_a_cart_coupon_lowers_the_amount_financed():
    plain = offers.discover({"order_amount": {"value": 1200000, "currency": "INR"}})["issuers"][0]["tenures"][0]
    coupon = offers.discover({"order_amount": {"value": 1200000, "currency": "INR"},
                              "cart_coupon_discount_amount": {"value": 100000, "currency": "INR"}})
    tenure = coupon["issuers"][0]["tenures"][0]
    assert tenure["loan_amount"]["value"] == plain["loan_amount"]["value"] - 100000
    assert tenure["monthly_emi_amount"]["value"] == 376487  # floor(P·r·(1+r)^n / ((1+r)^n − 1)), P 1,100,000, 16 %, 3 months


def _offer_request(discovery: dict, issuer: dict, tenure: dict, amount: int, extra: dict) -> dict:
    details = {k: v for k, v in issuer.items() if k not in ("tenures", "issuer_data")}
    return {"order_amount": {"value": amount, "currency": "INR"},
            "payment_amount": {"value": emi.payment_amount(tenure), "currency": "INR"},
            "offer_data": {"offer_details": {**details, "tenure": tenure}}, **extra}


@settings(max_examples=60, deadline=None)
@given(amount=st.integers(1, 60_000_000), product_share=st.integers(0, 100), coupon_share=st.integers(0, 50))
def test_everything_discovered_is_sensible_and_validates_exactly(amount, product_share, coupon_share):
    extra: dict = {}
    if product_share:
        extra["product_details"] = [{"product_code": "redmi_1",
                                     "product_amount": {"value": amount * product_share // 100, "currency": "INR"}}]
    coupon = amount * coupon_share // 100
    if coupon:
        extra["cart_coupon_discount_amount"] = {"value": coupon, "currency": "INR"}
    discovery = offers.discover({"order_amount": {"value": amount, "currency": "INR"}, **extra})
    for issuer in discovery["issuers"]:
        for tenure in issuer["tenures"]:
            assert tenure["monthly_emi_amount"]["value"] > 0 and tenure["interest_amount"]["value"] >= 0
            assert tenure["total_emi_amount"]["value"] == tenure["monthly_emi_amount"]["value"] * tenure["tenure_value"]
            offers.validate(_offer_request(discovery, issuer, tenure, amount, extra), payment_method="CREDIT_EMI")


def test_validation_over_http_refuses_with_the_reason(client, sandbox):
    request = copy.deepcopy(VALIDATION)
    request["offer_data"]["offer_details"]["tenure"]["monthly_emi_amount"]["value"] = 1
    token = client.requestor.tokens.get()
    answer = requests.post(sandbox.url + "/api/affordability/v1/offer/validate", json=request,
                           headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 422 and answer.json()["code"] == "OFFER_MISMATCH"


def test_a_product_above_the_order_is_a_400_over_http(client, sandbox):
    token = client.requestor.tokens.get()
    answer = requests.post(sandbox.url + "/api/affordability/v1/offer/discovery",
                           json={"order_amount": {"value": 1000, "currency": "INR"},
                                 "product_details": [{"product_code": "x", "product_amount": {"value": 1001}}]},
                           headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST"


def test_the_offer_book_is_configurable_over_http(client, sandbox):
    book = {"issuers": [{"id": "91", "name": "AXIS CC", "issuer_type": "CC_BANK", "bank": "AXIS",
                         "min_amount": 100000, "max_amount": 900000,
                         "tenures": [{"tenure_id": "1", "months": 6, "rate": "13.5", "offer_id": "7",
                                      "offer_parameter_id": "8", "processing_fee": 9900}]}]}
    try:
        put = requests.put(sandbox.url + "/sandbox/offers", json=book, timeout=5)
        assert put.status_code == 200, put.text
        token = client.requestor.tokens.get()
        found = requests.post(sandbox.url + "/api/affordability/v1/offer/discovery",
                              json={"order_amount": {"value": 500000, "currency": "INR"}},
                              headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        tenure = found["issuers"][0]["tenures"][0]
        assert (found["issuers"][0]["name"], tenure["interest_rate_percentage"], tenure["monthly_emi_amount"]["value"],
                tenure["processing_fee_details"]["amount"]["value"]) == ("AXIS CC", 13.5,
                                                                         86645, 9900)
        bad = requests.put(sandbox.url + "/sandbox/offers", json={"issuers": [{"id": "1"}]}, timeout=5)
        assert bad.status_code == 400
    finally:
        requests.put(sandbox.url + "/sandbox/offers", json={}, timeout=5)

import pytest

from orchestrator.domain import emi


@pytest.mark.parametrize("months,monthly,total,interest", [
    (3, 410713, 1232139, 32139), (6, 209436, 1256616, 56616), (9, 142379, 1281411, 81411),
    (12, 108877, 1306524, 106524), (18, 75427, 1357686, 157686), (24, 58755, 1410120, 210120),
])
def test_standard_tenures_give_the_seed_figures(months, monthly, total, interest):
    q = emi.quote(1200000, months, 16)
    assert (q.loan, q.monthly, q.total, q.interest, q.emi_type) == (1200000, monthly, total, interest, "STANDARD")


def test_instant_subvention_lowers_the_loan_and_is_no_cost_when_it_covers_interest():
    q = emi.quote(2000000, 3, 16, discount=200000, subvention_type="INSTANT", subvention_pct=5)
    assert (q.loan, q.subvention, q.monthly, q.total, q.interest) == (1714286, 85714, 586734, 1760202, 45916)
    assert q.emi_type == "NO_COST"


def test_post_subvention_keeps_the_loan_and_is_low_cost_when_it_covers_part():
    q6 = emi.quote(2000000, 6, 16, discount=200000, subvention_type="POST", subvention_pct=5)
    q9 = emi.quote(2000000, 9, 16, discount=200000, subvention_type="POST", subvention_pct=5)
    assert (q6.loan, q6.subvention, q6.monthly, q6.emi_type) == (1800000, 90000, 314154, "NO_COST")
    assert (q9.monthly, q9.interest, q9.emi_type) == (213568, 122112, "LOW_COST")


def test_the_validation_sample_at_twenty_percent():
    q = emi.quote(2000000, 3, 20, discount=50000)
    assert (q.loan, q.monthly, q.total, q.interest) == (1950000, 671786, 2015358, 65358)


def test_zero_interest_rounds_the_instalment_up():
    assert emi.monthly_instalment(1000, 0, 3) == 334


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        emi.monthly_instalment(0, 16, 3)
    with pytest.raises(ValueError):
        emi.quote(1000, 3, 16, discount=1000)
    with pytest.raises(ValueError):
        emi.quote(1000, 3, 16, subvention_type="LATER")


# --- properties ---------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.seeds import emi_samples  # noqa: E402

AMOUNTS = st.integers(1, 10_000_000_000)
MONTHS = st.integers(1, 120)
RATES = st.decimals(0, 60, places=2)
PCTS = st.decimals(0, 50, places=2)


@settings(max_examples=300)
@given(loan=AMOUNTS, months=MONTHS, rate=RATES)
def test_total_is_monthly_times_tenure_and_interest_is_never_negative(loan, months, rate):
    q = emi.figures(loan, months, rate)
    assert q.total == q.monthly * months
    assert q.interest == q.total - q.loan >= 0
    assert q.monthly >= 1 and q.net_payment == q.total


@settings(max_examples=300)
@given(price=st.integers(2, 10_000_000_000), months=MONTHS, rate=RATES, pct=PCTS,
       discount_share=st.integers(0, 90))
def test_instant_subvention_loan_plus_subvention_is_price_less_discount(price, months, rate, pct, discount_share):
    discount = price * discount_share // 100
    q = emi.quote(price, months, rate, discount=discount, subvention_type="INSTANT", subvention_pct=pct)
    assert q.loan + q.subvention == price - discount == q.payment_amount


@settings(max_examples=300)
@given(price=st.integers(2, 10_000_000_000), months=MONTHS, rate=RATES, pct=PCTS,
       kind=st.sampled_from(["INSTANT", "POST"]), discount_share=st.integers(0, 90))
def test_a_no_cost_tenure_costs_the_customer_no_more_than_the_price(price, months, rate, pct, kind, discount_share):
    discount = price * discount_share // 100
    q = emi.quote(price, months, rate, discount=discount, subvention_type=kind, subvention_pct=pct)
    # what the customer pays over the tenure, less what a POST subvention gives back
    cost = q.total - (q.subvention if kind == "POST" else 0)
    if q.emi_type == "NO_COST":
        assert cost <= price - discount <= price
    if q.emi_type == "STANDARD":
        assert q.subvention == 0


@settings(max_examples=200)
@given(loan=AMOUNTS, months=MONTHS, low=RATES, high=RATES)
def test_a_higher_rate_never_lowers_the_instalment(loan, months, low, high):
    low, high = min(low, high), max(low, high)
    assert emi.monthly_instalment(loan, low, months) <= emi.monthly_instalment(loan, high, months)


# --- choosing an offer ------------------------------------------------------------------

DISCOVERY = emi_samples()[3]


def test_choose_returns_the_offer_exactly_as_discovered():
    chosen = emi.choose(DISCOVERY, "23", "4", 108877)
    issuer = DISCOVERY["issuers"][0]
    assert chosen.offer_details["tenure"] == issuer["tenures"][3]
    assert chosen.offer_details["tenure"]["interest_rate_percentage"] == 16
    assert isinstance(chosen.offer_details["tenure"]["interest_rate_percentage"], int)
    assert {k: chosen.offer_details[k] for k in ("id", "name", "issuer_type", "priority")} == \
        {"id": "23", "name": "INDUSIND CC", "issuer_type": "CC_BANK", "priority": 1}
    assert "tenures" not in chosen.offer_details and chosen.payment_amount == 1200000


@pytest.mark.parametrize("issuer,tenure,expected,code", [
    ("99", "1", None, "ISSUER_NOT_OFFERED"),
    ("23", "99", None, "TENURE_NOT_OFFERED"),
    ("23", "1", 410714, "OFFER_CHANGED"),
    ("23", "1", 410712, "OFFER_CHANGED"),
])
def test_choose_refuses_with_a_code(issuer, tenure, expected, code):
    with pytest.raises(emi.OfferRefused) as refused:
        emi.choose(DISCOVERY, issuer, tenure, expected)
    assert refused.value.code == code


def test_payment_amount_adds_instant_subvention_to_the_loan():
    pnb = emi_samples()[5]["issuers"][0]
    instant = next(t for t in pnb["tenures"] if t["tenure_id"] == "1")
    post = next(t for t in pnb["tenures"] if t["tenure_id"] == "2")
    assert emi.payment_amount(instant) == 1714286 + 85714 == 1800000
    assert emi.payment_amount(post) == 1800000


def test_summary_shows_the_figures_the_merchant_needs():
    chosen = emi.choose(emi_samples()[5], "25", "1", None)
    view = emi.summary(chosen.offer_details, "INR")
    assert view["monthly_emi_amount"] == {"value": 586734, "currency": "INR"}
    assert (view["emi_type"], view["tenure"]["months"], view["issuer"]["name"]) == ("NO_COST", 3, "PNB CC")
    assert view["discount_amount"]["value"] == 200000 and view["subvention_amount"]["value"] == 85714
    assert view["processing_fee"]["value"] == 19900 and view["payment_amount"]["value"] == 1800000

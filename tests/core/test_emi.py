import pytest

from orchestrator.core import emi


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

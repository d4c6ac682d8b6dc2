"""The one table of payment methods: what each needs and where its checkout starts."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from orchestrator.domain import methods
from orchestrator.domain.methods import METHODS, Method, MethodName
from orchestrator.domain.saga import State
from orchestrator.merchant.schemas import CardIn, CheckoutIn


def test_every_method_the_api_takes_has_a_row_in_the_table():
    assert set(get_args(MethodName)) == {m.value for m in METHODS} == {m.value for m in Method}


def test_an_emi_method_starts_by_quoting_its_offer_and_a_card_payment_does_not():
    assert {m: rule.first_state for m, rule in METHODS.items()} == {
        Method.CARD: State.NEW, Method.DEBIT_EMI: State.QUOTING, Method.CREDIT_EMI: State.QUOTING}


def test_the_card_fields_a_checkout_needs_are_the_tables(monkeypatch):
    card = CardIn(number="4111111111111111")
    monkeypatch.setitem(METHODS, Method.CARD, methods.MethodRule(card_fields=("name",), emi=False,
                                                                  first_state=State.NEW, native_otp=True))
    assert card.missing_for("CARD") == ["name"]


def test_debit_emi_needs_the_registered_mobile_number_not_the_cvv():
    card = CardIn(number="4111111111111111")
    assert card.missing_for("DEBIT_EMI") == ["registered_mobile_number"]
    assert CardIn(number="4111111111111111", registered_mobile_number="9876543210").missing_for("DEBIT_EMI") == []


def test_a_method_the_table_says_takes_no_emi_refuses_an_emi_choice(monkeypatch):
    request = {"amount": {"value": 100000, "currency": "INR"}, "payment_method": "CREDIT_EMI",
               "card": {"number": "4111111111111111", "name": "A", "cvv": "123", "expiry_month": "12",
                        "expiry_year": "2099"}, "emi": {"issuer_id": "1", "tenure_id": "3"}}
    CheckoutIn.model_validate(request)
    monkeypatch.setitem(METHODS, Method.CREDIT_EMI, methods.MethodRule(
        card_fields=methods.CARD_DETAILS, emi=False, first_state=State.NEW, native_otp=True))
    with pytest.raises(ValidationError, match="emi, product_details"):
        CheckoutIn.model_validate(request)


def test_native_otp_is_the_tables_for_each_method():
    from orchestrator.domain.methods import uses_native_otp

    assert uses_native_otp("CARD", True) and uses_native_otp("CREDIT_EMI", True)
    assert not uses_native_otp("DEBIT_EMI", True) and not uses_native_otp("CARD", False)


def test_only_debit_emi_names_the_card_in_offer_discovery():
    from orchestrator.domain.methods import METHODS, Method

    assert {m for m, r in METHODS.items() if r.discovery_names_card} == {Method.DEBIT_EMI}


def test_a_refused_refund_is_the_merchant_apis_one_error_type():
    from orchestrator.merchant.errors import MerchantError
    from orchestrator.merchant.refunds import RefundRefused

    assert issubclass(RefundRefused, MerchantError)
    assert RefundRefused(409, "X", "m", a=1).body() == {"code": "X", "message": "m", "a": 1}

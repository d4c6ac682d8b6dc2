import datetime as dt

import pytest
from pydantic import ValidationError

from orchestrator.domain.cards import expiry_in_future, luhn_ok, network_of
from orchestrator.domain.money import Money


def test_luhn_accepts_valid_and_rejects_altered_numbers():
    assert luhn_ok("4012001037141112")
    assert luhn_ok("5555-5555-5555-4444")
    assert not luhn_ok("4012001037141113")
    assert not luhn_ok("4012x01037141112")


def test_network_from_bin():
    assert network_of("4012001037141112") == "VISA"
    assert network_of("5555555555554444") == "MASTERCARD"
    assert network_of("2221000000000009") == "MASTERCARD"
    assert network_of("6522000000000000") == "RUPAY"


def test_expiry_accepts_two_and_four_digit_years():
    today = dt.date(2026, 11, 22)
    assert expiry_in_future("12", "2026", today)
    assert expiry_in_future("03", "30", today)
    assert not expiry_in_future("10", "26", today)


def test_money_is_strict_integer_paise_with_a_known_currency():
    assert Money(value=1100, currency="inr").currency == "INR"
    for bad in ({"value": 0}, {"value": -5}, {"value": 10.5}, {"value": "100"}, {"value": 100, "currency": "XYZ"}):
        with pytest.raises(ValidationError):
            Money(**bad)

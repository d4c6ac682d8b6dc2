"""The sandbox's time-driven changes (payment expiry, refund settlement) follow only what is open,
and keep working across a restart (snapshot → restore)."""

from __future__ import annotations

import uuid

from orchestrator.sandbox.gateway import Gateway, SandboxConfig

OTP_CARD = "4012001037141112"


class Time:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def gateway(clock: Time, **config: object) -> Gateway:
    return Gateway(SandboxConfig(payment_expiry_seconds=900.0, **config), clock=clock)  # type: ignore[arg-type]


def order(g: Gateway, amount: int = 5000) -> str:
    body = {"merchant_order_reference": uuid.uuid4().hex, "order_amount": {"value": amount, "currency": "INR"}}
    return g.create_order(body)["data"]["order_id"]


def pay(g: Gateway, order_id: str) -> str:
    item = {"merchant_payment_reference": uuid.uuid4().hex, "payment_method": "CARD",
            "payment_amount": {"value": 5000, "currency": "INR"},
            "payment_option": {"card_details": {"name": "A", "card_number": OTP_CARD, "cvv": "123",
                                                "expiry_month": "12", "expiry_year": "2030"}}}
    return g.create_payment(order_id, {"payments": [item]})["data"]["payments"][-1]["id"]


def paid(g: Gateway) -> str:
    order_id = order(g)
    payment_id = pay(g, order_id)
    g.generate_otp({"payment_id": payment_id})
    g.submit_otp({"payment_id": payment_id, "otp": "123456"})
    return order_id


def status(g: Gateway, order_id: str) -> str:
    return g.get_order(order_id)["data"]["status"]


def payment_status(g: Gateway, order_id: str) -> str:
    return g.get_order(order_id)["data"]["payments"][-1]["status"]


def test_an_unpaid_payment_expires_and_a_paid_one_does_not():
    clock = Time()
    g = gateway(clock)
    unpaid, done = order(g), paid(g)
    pay(g, unpaid)
    clock.now += 901
    g.tick()
    assert payment_status(g, unpaid) == "FAILED"
    assert status(g, done) == "PROCESSED"
    assert not g.open_payments  # nothing left to look at on the next call


def test_a_restored_sandbox_still_expires_payments_and_settles_refunds():
    clock = Time()
    g = gateway(clock, refund_settle_seconds=60.0)
    unpaid, done = order(g), paid(g)
    pay(g, unpaid)
    refund = g.refund(done, {"merchant_order_reference": uuid.uuid4().hex})["data"]["order_id"]
    again = gateway(clock, refund_settle_seconds=60.0)
    again.restore(g.snapshot())
    clock.now += 901
    again.tick()
    assert payment_status(again, unpaid) == "FAILED"
    assert status(again, refund) == "PROCESSED"
    assert status(again, done) == "FULLY_REFUNDED"


def test_the_ledger_can_be_read_for_some_orders_only():
    g = gateway(Time())
    first, second, third = paid(g), order(g), order(g)
    assert {e["order_id"] for e in g.ledger_view([first, third])} == {first, third}
    assert {e["order_id"] for e in g.ledger_view()} == {first, second, third}

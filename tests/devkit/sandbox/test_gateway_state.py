"""The sandbox's time-driven changes (payment expiry, refund settlement) follow only what is open,
and keep working across a restart (snapshot → restore)."""

from __future__ import annotations

import uuid

from devkit.sandbox.gateway import Gateway, GatewayError, SandboxConfig

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


def test_a_state_file_written_before_the_sandbox_moved_to_the_devkit_still_restores():
    """A developer's DATA_DIR/sandbox-state.pickle names orchestrator.sandbox.gateway.PaymentState."""
    import pickle

    clock = Time()
    g = gateway(clock)
    unpaid = order(g)
    pay(g, unpaid)
    blob = pickle.dumps({name: getattr(g, name) for name in g.DURABLE}, protocol=0)
    old = blob.replace(b"cdevkit.sandbox.state\nPaymentState\n", b"corchestrator.sandbox.gateway\nPaymentState\n")
    old = old.replace(b"cdevkit.sandbox.", b"corchestrator.sandbox.")
    assert b"corchestrator.sandbox.gateway\nPaymentState\n" in old and b"cdevkit." not in old
    again = gateway(clock)
    again.restore(old)
    clock.now += 901
    again.tick()
    assert payment_status(again, unpaid) == "FAILED"


def test_the_ledger_can_be_read_for_some_orders_only():
    g = gateway(Time())
    first, second, third = paid(g), order(g), order(g)
    assert {e["order_id"] for e in g.ledger_view([first, third])} == {first, third}
    assert {e["order_id"] for e in g.ledger_view()} == {first, second, third}


def _waiting_for_otp(g: Gateway) -> tuple[str, str]:
    order_id = order(g)
    payment_id = pay(g, order_id)
    g.generate_otp({"payment_id": payment_id})
    return order_id, payment_id


def test_an_otp_submitted_after_the_payment_expired_is_refused_payment_expired():
    clock = Time()
    g = gateway(clock)
    order_id, payment_id = _waiting_for_otp(g)
    clock.now += 901  # nobody asked for the order in between: the expiry is still enforced
    try:
        g.submit_otp({"payment_id": payment_id, "otp": "123456"})
    except GatewayError as exc:
        assert (exc.status, exc.code) == (422, "PAYMENT_EXPIRED")
    else:
        raise AssertionError("an expired payment was authorized")
    assert payment_status(g, order_id) == "FAILED"


def test_the_bank_page_after_the_payment_expired_does_not_authorize():
    clock = Time()
    g = gateway(clock)
    order_id = order(g)
    payment_id = pay(g, order_id)
    token = g.payments[payment_id].acs_token
    clock.now += 901
    g.acs_decide(payment_id, token, approve=True)
    data = g.get_order(order_id)["data"]
    assert data["payments"][-1]["status"] == "FAILED"
    assert data["payments"][-1]["error_detail"]["code"] == "PAYMENT_EXPIRED"
    assert data["status"] not in ("AUTHORIZED", "PROCESSED")


def test_exhausted_otp_attempts_fail_the_order():
    g = gateway(Time())
    order_id, payment_id = _waiting_for_otp(g)
    for _ in range(3):
        try:
            g.submit_otp({"payment_id": payment_id, "otp": "000000"})
        except GatewayError:
            pass
    assert status(g, order_id) == "FAILED"

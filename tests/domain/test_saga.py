import pytest

from orchestrator.domain import saga
from orchestrator.domain.saga import FINAL, GatewayView, State, Step


def test_final_states_lead_nowhere():
    for state in FINAL:
        assert saga.TRANSITIONS[state] == frozenset()


def test_every_state_is_in_the_table_and_has_a_public_status():
    assert set(saga.TRANSITIONS) == set(State)
    assert set(saga.PUBLIC_STATUS) == set(State)


def test_public_statuses_include_the_documented_ones():
    assert {"PROCESSING", "AWAITING_OTP", "AWAITING_REDIRECT", "AUTHORIZED", "COMPLETED", "CANCELLED",
            "FAILED"} <= set(saga.PUBLIC_STATUS.values())


def test_a_late_payment_failure_cannot_undo_authorized_or_completed():
    assert State.AUTHORIZED not in saga.allowed_from(State.FAILED)
    assert State.COMPLETED not in saga.allowed_from(State.FAILED)
    with pytest.raises(saga.IllegalTransition):
        saga.check(State.COMPLETED, State.FAILED)


def test_allowed_from_is_the_inverse_of_the_table():
    for target in State:
        for source in saga.allowed_from(target):
            assert saga.can_move(source, target)


def test_the_merchant_cancels_from_every_cancellable_state_only():
    reachable = {s for s in State if saga.decide(s, saga.Fact.CANCEL_REQUESTED, saga.Source.MERCHANT) is not None}
    assert reachable == saga.CANCELLABLE


def test_a_cancel_may_discover_the_payment_completed():
    assert saga.can_move(State.CANCELLING, State.COMPLETED)


def test_next_step_per_state():
    assert saga.next_step(State.NEW) is Step.CREATE_ORDER
    assert saga.next_step(State.ORDER_CREATED) is Step.CARD_DETAILS
    assert saga.next_step(State.CARD_CHECKED) is Step.CREATE_PAYMENT
    assert saga.next_step(State.PAYMENT_CREATED) is Step.GENERATE_OTP
    assert saga.next_step(State.AWAITING_REDIRECT) is Step.POLL_ORDER
    assert saga.next_step(State.CANCELLING) is Step.CANCEL_ORDER
    assert saga.next_step(State.AUTHORIZED) is Step.EXPIRE_HOLD
    assert saga.next_step(State.CAPTURING) is Step.CAPTURE_ORDER
    assert all(saga.next_step(s) is None for s in FINAL)


def test_every_next_step_runs_in_its_own_state():
    for state, step in saga.NEXT_STEP.items():
        assert state in saga.STEP_STATES[step]


@pytest.mark.parametrize("order,payment,view", [
    ("CREATED", None, GatewayView.PENDING),
    ("PENDING", "PENDING", GatewayView.PENDING),
    ("PENDING", "FAILED", GatewayView.PAYMENT_FAILED),
    ("ATTEMPTED", "FAILED", GatewayView.PAYMENT_FAILED),
    ("AUTHORIZED", "AUTHORIZED", GatewayView.AUTHORIZED),
    ("PROCESSED", "PROCESSED", GatewayView.PROCESSED),
    ("PARTIALLY_CAPTURED", "PROCESSED", GatewayView.PROCESSED),
    ("FULLY_REFUNDED", None, GatewayView.PROCESSED),
    ("CANCELLED", "CANCELLED", GatewayView.CANCELLED),
    ("FAILED", "FAILED", GatewayView.FAILED),
    ("SOMETHING_NEW", None, GatewayView.PENDING),
])
def test_gateway_view_reads_order_and_payment_status(order, payment, view):
    assert saga.gateway_view(order, payment) is view


def test_an_authorization_holds_a_pre_auth_checkout_and_a_normal_one_waits_for_processed():
    F, W = saga.Fact, saga.Source.WEBHOOK
    assert saga.fact_of(GatewayView.AUTHORIZED) is F.PLURAL_AUTHORIZED
    assert saga.decide(State.AWAITING_OTP, F.PLURAL_AUTHORIZED, W, pre_auth=True) is State.AUTHORIZED
    assert saga.decide(State.AWAITING_OTP, F.PLURAL_AUTHORIZED, W, pre_auth=False) is None
    assert saga.decide(State.AWAITING_OTP, F.PLURAL_PROCESSED, W) is State.COMPLETED
    assert saga.decide(State.AWAITING_OTP, F.PLURAL_PAYMENT_FAILED, W) is State.FAILED
    assert saga.fact_of(GatewayView.PENDING) is None


def test_poll_delay_follows_the_schedule_then_stays_at_its_end():
    schedule = (5.0, 10.0, 30.0)
    assert [saga.poll_delay(schedule, n) for n in range(5)] == [5.0, 10.0, 30.0, 30.0, 30.0]
    with pytest.raises(ValueError):
        saga.poll_delay((), 0)


def test_the_core_imports_no_celery_http_or_database_code():
    import ast
    import pathlib

    core = pathlib.Path(saga.__file__).parent
    banned = {"celery", "kombu", "redis", "requests", "fastapi", "sqlmodel", "sqlalchemy", "httpx"}
    for path in core.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"


def test_a_public_change_is_named_only_when_the_merchant_sees_one():
    from orchestrator.domain.saga import State, public_change

    assert public_change(State.PAYMENT_CREATED, State.AWAITING_OTP) == "AWAITING_OTP"
    assert public_change(State.NEW, State.ORDER_CREATED) is None  # PROCESSING both
    assert public_change(State.WATCHING, State.CANCELLED) is None  # CANCELLED both


def test_a_refund_is_known_at_plural_by_our_reference_and_only_its_own_refund_order_matches():
    ref = saga.plural_refund_reference("rfd_" + "a" * 32)
    assert len(ref) <= 50 and saga.refund_id_of(ref) == "rfd_" + "a" * 32 and saga.refund_id_of("ord-1") is None
    ok = dict(order_type="REFUND", parent_order_id="v1-p", amount=700, currency="INR", want_parent="v1-p",
              want_amount=700, want_currency="INR")
    assert saga.refund_mismatch(**ok) is None
    assert "type CHARGE" in saga.refund_mismatch(**{**ok, "order_type": "CHARGE"})
    assert "parent order v1-x, not v1-p" in saga.refund_mismatch(**{**ok, "parent_order_id": "v1-x"})
    assert "amount 900 INR, not 700 INR" in saga.refund_mismatch(**{**ok, "amount": 900})
    assert saga.refund_mismatch(**{**ok, "want_parent": None}) is not None  # no order of ours: nothing matches


def test_a_refund_in_doubt_keeps_its_amount_and_a_failed_late_refund_frees_it():
    R = saga.RefundState
    assert saga.refund_reserves(R.NEEDS_ATTENTION, saga.REFUND_MISMATCH)
    assert not saga.refund_reserves(R.NEEDS_ATTENTION, saga.LATE_REFUND_FAILED)
    assert not saga.refund_reserves(R.FAILED, None) and saga.refund_reserves(R.PENDING, None)
    assert R.NEEDS_ATTENTION in saga.REFUND_TRANSITIONS[R.PENDING]
    assert saga.REFUND_TRANSITIONS[R.NEEDS_ATTENTION] == {R.PROCESSED, R.FAILED}

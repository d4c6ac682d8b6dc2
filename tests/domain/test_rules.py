"""The one rule of the saga, ``decide``: which fact from which source moves a checkout where.

Plain unit tests of the tables (the findings of issue 8 among them) and property tests over every
state, fact and source.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain import saga
from orchestrator.domain.saga import FINAL, Fact, Source, State

F, S = Fact, State
PLURAL_FACTS = [F.PLURAL_AUTHORIZED, F.PLURAL_PROCESSED, F.PLURAL_PAYMENT_FAILED, F.PLURAL_FAILED, F.PLURAL_CANCELLED]


@pytest.mark.parametrize("source", [Source.WEBHOOK, Source.POLL, Source.STEP])
@pytest.mark.parametrize("state", [S.CAPTURING, S.COMPLETED, S.CANCELLING, S.AUTHORIZED])
def test_an_order_snapshot_saying_authorized_never_moves_a_checkout_toward_authorization(state, source):
    assert saga.decide(state, F.PLURAL_AUTHORIZED, source, pre_auth=True) is None


@pytest.mark.parametrize("source", [Source.WEBHOOK, Source.POLL, Source.MERCHANT, Source.TIMER, Source.OPERATOR])
def test_only_our_own_capture_calls_refusal_moves_a_capture_back(source):
    assert saga.decide(S.CAPTURING, F.CAPTURE_REFUSED, source) is None
    assert saga.decide(S.CAPTURING, F.CAPTURE_REFUSED, Source.STEP) is S.AUTHORIZED
    assert saga.allowed_from(S.AUTHORIZED) & {S.CAPTURING} == {S.CAPTURING}
    assert all(not saga.may_cause(src, S.CAPTURING, S.AUTHORIZED) for src in Source if src is not Source.STEP)


@pytest.mark.parametrize("fact", [F.PLURAL_PAYMENT_FAILED, F.PLURAL_FAILED])
@pytest.mark.parametrize("state", [S.AUTHORIZED, S.CAPTURING, S.COMPLETED])
def test_a_stale_failure_never_undoes_an_authorization_or_a_capture(state, fact):
    assert saga.decide(state, fact, Source.WEBHOOK, pre_auth=True) is None


def test_a_fact_from_a_source_that_may_not_state_it_moves_nothing():
    assert saga.decide(S.NEW, F.ORDER_CREATED, Source.WEBHOOK) is None
    assert saga.decide(S.AWAITING_OTP, F.OTP_SUBMITTED, Source.STEP) is None
    assert saga.decide(S.AUTHORIZED, F.DELIVERED, Source.WEBHOOK) is None
    assert saga.decide(S.AWAITING_OTP, F.DEADLINE_PASSED, Source.MERCHANT) is None


def test_a_refused_cancel_with_a_payment_still_open_is_watched_and_shows_cancelled():
    assert saga.decide(S.CANCELLING, F.CANCEL_REFUSED, Source.STEP) is S.WATCHING
    assert saga.public_status(S.WATCHING) == "CANCELLED"
    assert S.WATCHING not in FINAL


def test_a_watched_order_that_pays_after_all_is_undone():
    assert saga.decide(S.WATCHING, F.PLURAL_AUTHORIZED, Source.WEBHOOK, pre_auth=True) is S.CANCELLING
    assert saga.decide(S.WATCHING, F.PLURAL_PROCESSED, Source.POLL) is S.CANCELLED
    assert saga.decide(S.WATCHING, F.PLURAL_PAYMENT_FAILED, Source.POLL) is S.CANCELLED


def test_our_release_of_an_undelivered_hold_ends_expired():
    assert saga.decide(S.CANCELLING, F.CANCEL_CONFIRMED, Source.STEP, cancel_reason="HOLD_EXPIRED") is S.EXPIRED
    assert saga.decide(S.CANCELLING, F.PLURAL_CANCELLED, Source.WEBHOOK, cancel_reason="HOLD_EXPIRED") is S.EXPIRED
    assert saga.decide(S.CANCELLING, F.CANCEL_CONFIRMED, Source.STEP, cancel_reason="MERCHANT") is S.CANCELLED


def test_a_spent_retry_budget_needs_attention_and_an_operator_can_send_it_back():
    assert saga.decide(S.CAPTURING, F.GAVE_UP, Source.TIMER) is S.NEEDS_ATTENTION
    assert saga.decide(S.NEEDS_ATTENTION, F.OPERATOR_RETRY, Source.OPERATOR, attention_from=S.CAPTURING) is S.CAPTURING
    assert saga.decide(S.NEEDS_ATTENTION, F.OPERATOR_RESOLVE, Source.OPERATOR, wanted=S.FAILED) is S.FAILED
    assert saga.decide(S.NEEDS_ATTENTION, F.OPERATOR_RESOLVE, Source.OPERATOR, wanted=S.CAPTURING) is None
    assert all(saga.decide(s, F.GAVE_UP, Source.TIMER) is None for s in FINAL)


def test_a_stuck_capture_follows_plural_to_completed_but_not_back_to_authorized():
    stuck = dict(attention_from=S.CAPTURING, pre_auth=True)
    assert saga.decide(S.NEEDS_ATTENTION, F.PLURAL_PROCESSED, Source.POLL, **stuck) is S.COMPLETED
    assert saga.decide(S.NEEDS_ATTENTION, F.PLURAL_AUTHORIZED, Source.POLL, **stuck) is None


@pytest.mark.parametrize("source", [Source.STEP, Source.WEBHOOK, Source.POLL])
def test_a_gateway_answer_that_disagrees_with_the_checkout_needs_attention_from_any_unfinished_state(source):
    for state in saga.RESUMABLE:
        for pre_auth in (False, True):
            assert saga.decide(state, F.GATEWAY_MISMATCH, source, pre_auth=pre_auth) is S.NEEDS_ATTENTION, state


@pytest.mark.parametrize("source", [Source.STEP, Source.WEBHOOK, Source.POLL])
def test_a_mismatch_moves_no_final_checkout_and_none_already_in_front_of_a_person(source):
    for state in FINAL:
        assert saga.decide(state, F.GATEWAY_MISMATCH, source) is None
    for stuck in saga.RESUMABLE:
        assert saga.decide(S.NEEDS_ATTENTION, F.GATEWAY_MISMATCH, source, attention_from=stuck) is None


@pytest.mark.parametrize("source", [Source.MERCHANT, Source.TIMER, Source.OPERATOR])
def test_only_plurals_answers_state_a_mismatch(source):
    assert saga.decide(S.AWAITING_OTP, F.GATEWAY_MISMATCH, source) is None


def test_the_capture_deadline_runs_from_plurals_authorization_time():
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert saga.capture_deadline(at, hold_days=7, margin_seconds=3600) == at + dt.timedelta(days=7, hours=-1)


def test_the_legal_transitions_are_derived_from_the_moves():
    for (state, _fact), _target in saga.MOVES.items():
        assert saga.TRANSITIONS[state], state


# --- properties over the whole table --------------------------------------------------------

states, facts, sources = st.sampled_from(list(State)), st.sampled_from(list(Fact)), st.sampled_from(list(Source))
contexts = st.fixed_dictionaries({
    "pre_auth": st.booleans(), "cancel_reason": st.sampled_from([None, "MERCHANT", "CUSTOMER_TIMEOUT", "HOLD_EXPIRED"]),
    "attention_from": st.sampled_from([None, *saga.RESUMABLE]), "wanted": st.sampled_from([None, *State])})


@given(states, facts, sources, contexts)
def test_every_decision_is_a_legal_transition_its_source_may_cause(state, fact, source, ctx):
    target = saga.decide(state, fact, source, **ctx)
    if target is None:
        return
    assert saga.can_move(state, target)
    assert saga.may_cause(source, state, target)
    assert source in saga.SOURCES[fact]


@given(st.sampled_from(sorted(FINAL)), facts, sources, contexts)
def test_nothing_leaves_a_final_state(state, fact, source, ctx):
    assert saga.decide(state, fact, source, **ctx) is None


@given(states, st.sampled_from(PLURAL_FACTS), sources, contexts)
def test_plurals_view_never_moves_a_checkout_backwards(state, fact, source, ctx):
    order = [S.AUTHORIZED, S.CAPTURING, S.COMPLETED]
    target = saga.decide(state, fact, source, **ctx)
    if target is not None and state in order and target in order:
        assert order.index(target) >= order.index(state)
    if target is not None and state is not S.NEEDS_ATTENTION:
        assert target not in saga.BEFORE_AUTHORIZATION


def test_an_operator_outcome_must_agree_with_plurals_view_of_the_order():
    from orchestrator.domain.saga import GatewayView as V

    resolve = saga.operator_resolution
    # COMPLETED only when Plural took the money
    assert resolve(S.COMPLETED, V.PROCESSED) is S.COMPLETED
    assert all(resolve(S.COMPLETED, v) is None for v in (None, V.PENDING, V.AUTHORIZED, V.FAILED, V.CANCELLED))
    # CANCELLED releases a hold or closes a pending order through CANCELLING, never over a capture
    assert resolve(S.CANCELLED, V.AUTHORIZED) is S.CANCELLING
    assert resolve(S.CANCELLED, V.PENDING) is S.CANCELLING
    assert resolve(S.CANCELLED, None) is S.CANCELLED and resolve(S.CANCELLED, V.FAILED) is S.CANCELLED
    assert resolve(S.CANCELLED, V.PROCESSED) is None
    # FAILED only when no money is taken or held and no payment of ours is open
    assert resolve(S.FAILED, None) is S.FAILED and resolve(S.FAILED, V.PAYMENT_FAILED) is S.FAILED
    assert resolve(S.FAILED, V.PENDING) is S.FAILED
    assert resolve(S.FAILED, V.PENDING, payment_open=True) is None
    assert resolve(S.FAILED, V.AUTHORIZED) is None and resolve(S.FAILED, V.PROCESSED) is None


def test_an_operator_resolve_may_send_a_stuck_checkout_to_cancelling():
    assert saga.decide(S.NEEDS_ATTENTION, F.OPERATOR_RESOLVE, Source.OPERATOR, wanted=S.CANCELLING) is S.CANCELLING
    assert saga.decide(S.CAPTURING, F.OPERATOR_RESOLVE, Source.OPERATOR, wanted=S.CANCELLING) is None

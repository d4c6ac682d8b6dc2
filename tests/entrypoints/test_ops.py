"""The operator's commands: ``orchestrator status`` and ``orchestrator checkout ID``."""

from __future__ import annotations

import pytest

from orchestrator.entrypoints import cli
from orchestrator.store import reports
from tests.outbound.test_events import completed
from tests.saga.test_steps import checkout, received


def run(monkeypatch, capsys, harness, *argv):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{harness.db_path}")
    monkeypatch.setenv("COLUMNS", "200")
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_counts_checkouts_by_status_and_shows_the_event_backlog(harness, monkeypatch, capsys):
    h = harness
    completed(h)
    checkout(h)  # waiting for its OTP
    code, out, _ = run(monkeypatch, capsys, h, "status")
    assert code == 0
    assert "checkouts: 2" in out and "COMPLETED" in out and "AWAITING_OTP" in out
    assert "events to the merchant: 4 pending" in out


def test_status_lists_what_needs_attention_with_its_reason_and_what_is_overdue(harness, monkeypatch, capsys):
    from orchestrator.domain.saga import Fact, Source

    h = harness
    c = checkout(h)
    h.deps.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER, "card_details failed 8 times: ServerError")
    late = checkout(h)
    h.deps.repo.note(late.id, next_due_at=h.clock() - reports.OVERDUE_AFTER * 2)
    o = reports.overview(h.deps.repo, h.clock())
    assert [a["id"] for a in o["needs_attention"]] == [c.id] and o["overdue"]["count"] == 1
    code, out, _ = run(monkeypatch, capsys, h, "status")
    assert c.id in out and "card_details failed 8 times" in out and late.id in out


def test_checkout_shows_history_calls_and_events(harness, monkeypatch, capsys):
    h = harness
    c = completed(h)
    code, out, _ = run(monkeypatch, capsys, h, "checkout", c.id)
    assert code == 0
    for text in ("create_order", "submit_otp", "checkout.completed", "VERIFYING_OTP", "OTP accepted"):
        assert text in out, text
    assert run(monkeypatch, capsys, h, "checkout", "chk_nope")[0] == 1


def test_checkout_names_a_runs_claim_and_when_it_is_next_due(harness, monkeypatch, capsys):
    from orchestrator.store.models import Checkout

    h = harness
    c = checkout(h)
    token = h.deps.repo.claim(Checkout, c.id, 30)
    held = h.deps.repo.get(c.id)
    _, out, _ = run(monkeypatch, capsys, h, "checkout", c.id)
    assert f"held by a run until {held.claim_until.isoformat(timespec='seconds')}" in out
    assert f"next due {held.next_due_at.isoformat(timespec='seconds')}" in out
    h.deps.repo.release(Checkout, c.id, token)
    assert "held by a run" not in run(monkeypatch, capsys, h, "checkout", c.id)[1]


def test_an_unreachable_database_is_named_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert cli.main(["status"]) == 1
    err = capsys.readouterr().err
    assert "cannot read the database" in err and "./run.sh up" in err and "Traceback" not in err


def test_metrics_show_the_store_and_what_the_process_counted(harness):
    from orchestrator.telemetry import metrics

    h = harness
    c = completed(h)
    text, kind = metrics.render(lambda: reports.overview(h.deps.repo, h.clock(), limit=1))
    text = text.decode()
    assert kind.startswith("text/plain")
    assert 'orchestrator_checkouts{method="CARD",status="COMPLETED"} 1.0' in text
    assert 'orchestrator_events{status="pending"} 3.0' in text
    assert 'orchestrator_step_seconds_count{step="create_order"}' in text
    assert "orchestrator_overdue_checkouts 0.0" in text
    assert c.id not in text  # no per-checkout labels


def test_gateway_endpoints_are_labelled_without_ids():
    from orchestrator.telemetry.metrics import endpoint

    assert endpoint("POST", "/api/pay/v1/orders/v1-2611-aa-Xy9/payments") == "POST /api/pay/v1/orders/{id}/payments"
    assert endpoint("GET", "/api/pay/v1/orders/reference/b-51d4") == "GET /api/pay/v1/orders/reference/{id}"


# --- resolve: Plural's Get Order first, then the engine's moves -----------------------------

def resolve(monkeypatch, capsys, h, checkout_id, outcome):
    """``orchestrator resolve ID --as OUTCOME`` against the harness's service (and its sandbox)."""
    from types import SimpleNamespace

    monkeypatch.setattr("orchestrator.entrypoints.runtime.get_runtime", lambda: SimpleNamespace(service=lambda: h.service))
    return run(monkeypatch, capsys, h, "resolve", checkout_id, "--as", outcome, "--operator", "asha")


def test_resolving_a_stuck_capture_as_cancelled_goes_through_cancelling_and_releases_the_hold(
        harness, monkeypatch, capsys):
    from tests.saga.test_capture_refunds import kinds
    from tests.saga.test_engine import stuck_capture

    h = harness
    c = stuck_capture(h)
    code, out, _ = resolve(monkeypatch, capsys, h, c.id, "CANCELLED")
    assert code == 0 and f"{c.id}: CANCELLING" in out
    h.drain()
    assert h.state(c.id) == "CANCELLED"
    moves = [(t.from_state, t.to_state, t.source) for t in h.deps.repo.history(c.id)][-2:]
    assert moves == [("NEEDS_ATTENTION", "CANCELLING", "operator"), ("CANCELLING", "CANCELLED", "step")]
    assert kinds(h, c)[-1] == ("CANCELLED", 5000)  # the hold released at Plural


def test_resolving_as_completed_what_plural_only_authorized_is_refused(harness, monkeypatch, capsys):
    from tests.saga.test_capture_refunds import kinds
    from tests.saga.test_engine import stuck_capture

    h = harness
    c = stuck_capture(h)
    code, _, err = resolve(monkeypatch, capsys, h, c.id, "COMPLETED")
    assert code != 0
    assert "RESOLVE_REFUSED" in err and "AUTHORIZED" in err and "Traceback" not in err
    assert h.state(c.id) == "NEEDS_ATTENTION"
    assert [k for k, _ in kinds(h, c)].count("CAPTURED") == 0


def test_resolving_as_failed_while_plural_holds_the_money_is_refused(harness):
    from orchestrator.merchant.errors import ResolveRefused
    from tests.saga.test_engine import stuck_capture

    h = harness
    c = stuck_capture(h)
    with pytest.raises(ResolveRefused) as refused:
        h.service.operator(c.id, "resolve", "FAILED", who="asha")
    assert refused.value.status == 409 and refused.value.details["plural_status"] == "AUTHORIZED"
    assert h.state(c.id) == "NEEDS_ATTENTION"


def captured_meanwhile(h):
    """A checkout stuck in CAPTURING whose capture Plural made after all."""
    from orchestrator.plural.models import Amount, CaptureRequest
    from tests.saga.test_engine import faults, stuck_capture

    c = stuck_capture(h)
    faults(h)
    c = h.deps.repo.get(c.id)
    h.service.plural.capture_order(c.plural_order_id, CaptureRequest(
        merchant_capture_reference=c.merchant_capture_reference, capture_amount=Amount(value=5000, currency="INR")))
    return c


def test_a_capture_plural_made_meanwhile_is_followed_and_a_cancel_is_refused(harness):
    from orchestrator.merchant.errors import ResolveRefused

    h = harness
    c = captured_meanwhile(h)
    with pytest.raises(ResolveRefused) as refused:
        h.service.operator(c.id, "resolve", "CANCELLED", who="asha")
    assert refused.value.details["state"] == "COMPLETED" and "followed Plural to COMPLETED" in refused.value.message
    done = h.deps.repo.get(c.id)
    assert done.state == "COMPLETED" and done.captured_amount == 5000
    assert h.deps.repo.history(c.id)[-1].source == "poll"  # Plural's fact, not the operator's wish


def test_resolving_as_completed_what_plural_processed_is_plurals_fact(harness):
    h = harness
    c = captured_meanwhile(h)
    done = h.service.operator(c.id, "resolve", "COMPLETED", who="asha")
    assert done.state == "COMPLETED" and done.captured_amount == 5000


def test_resolve_refuses_when_plural_cannot_be_reached(harness, monkeypatch, capsys):
    from orchestrator.plural import PluralClient
    from tests.saga.test_engine import stuck_capture

    h = harness
    c = stuck_capture(h)
    h.service.plural = PluralClient.from_settings(
        h.deps.settings.model_copy(update={"plural_api_base": "http://127.0.0.1:9"}), max_attempts=1)
    code, _, err = resolve(monkeypatch, capsys, h, c.id, "CANCELLED")
    assert code != 0 and "PLURAL_UNAVAILABLE" in err
    assert h.state(c.id) == "NEEDS_ATTENTION"


def test_a_checkout_plural_has_no_order_for_is_resolved_as_failed(harness):
    from orchestrator.plural import PluralClient
    from tests.saga.test_engine import faults

    h = harness
    faults(h, {"kind": "error", "method": "POST", "path": "/orders$", "statuses": [503]})
    h.deps.plural = PluralClient.from_settings(h.deps.settings, max_attempts=1)
    c = received(h)
    for _ in range(h.deps.settings.step_max_attempts + 2):
        h.drain()
        h.clock.advance(h.deps.settings.retry_backoff_cap + h.deps.settings.step_lease_seconds)
        h.run_due()
    stuck = h.deps.repo.get(c.id)
    assert stuck.state == "NEEDS_ATTENTION" and stuck.attention_from == "NEW"
    assert h.service.operator(c.id, "resolve", "FAILED", who="asha").state == "FAILED"


def test_a_checkout_stuck_with_a_payment_open_at_plural_is_not_failed_but_cancelled_through_cancelling(harness):
    from orchestrator.domain.saga import Fact, Source
    from orchestrator.merchant.errors import ResolveRefused
    from tests.inbound.test_webhooks import start

    h = harness
    c = start(h)  # the customer is on the bank page: our payment is open at Plural
    h.deps.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER, "poll_order failed 8 times: ServerError")
    with pytest.raises(ResolveRefused) as refused:
        h.service.operator(c.id, "resolve", "FAILED", who="asha")
    assert "still open" in refused.value.message and h.state(c.id) == "NEEDS_ATTENTION"
    assert h.service.operator(c.id, "resolve", "CANCELLED", who="asha").state == "CANCELLING"


@pytest.mark.parametrize("wanted", ["COMPLETED", "CANCELLED"])
def test_resolve_refuses_an_order_that_disagrees_with_the_checkout_and_adopts_nothing(harness, monkeypatch, wanted):
    from orchestrator.merchant.errors import ResolveRefused

    from tests.saga.test_steps import mismatched, paid_less_than_asked

    h = harness
    c = mismatched(h, paid_less_than_asked(h, monkeypatch))
    with pytest.raises(ResolveRefused, match="payment_amount is 100 at Plural, 500000 here"):
        h.service.operator(c.id, "resolve", wanted, who="eve")
    after = h.deps.repo.get(c.id)
    assert after.state == "NEEDS_ATTENTION" and not after.captured_amount and not after.authorized_amount


def test_resolve_refund_on_the_command_line_prints_where_the_refund_ended(harness, monkeypatch, capsys):
    from types import SimpleNamespace

    from tests.saga.test_capture_refunds import needing_attention, one_503_on_the_refund

    h = harness
    c = completed(h)
    r = needing_attention(h, one_503_on_the_refund(h, c, 1000))
    monkeypatch.setattr("orchestrator.entrypoints.runtime.get_runtime", lambda: SimpleNamespace(service=lambda: h.service))
    code, out, _ = run(monkeypatch, capsys, h, "resolve-refund", r.id, "--operator", "asha")
    assert code == 0 and out.strip() == f"{r.id}: FAILED (REFUND_NOT_AT_PLURAL)"
    code, _, err = run(monkeypatch, capsys, h, "resolve-refund", r.id)
    assert code == 1 and "INVALID_STATE" in err

"""The operator's commands: ``orchestrator status`` and ``orchestrator checkout ID``."""

from __future__ import annotations

from orchestrator import cli, ops
from tests.test_events import completed
from tests.test_steps import checkout


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
    from orchestrator.core.saga import Fact, Source

    h = harness
    c = checkout(h)
    h.deps.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER, "card_details failed 8 times: ServerError")
    late = checkout(h)
    h.deps.repo.note(late.id, next_due_at=h.clock() - ops.OVERDUE_AFTER * 2)
    o = ops.overview(h.deps.repo, h.clock())
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
    from orchestrator.db.models import Checkout

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
    from orchestrator import metrics

    h = harness
    c = completed(h)
    text, kind = metrics.render(h.deps.repo, h.clock)
    text = text.decode()
    assert kind.startswith("text/plain")
    assert 'orchestrator_checkouts{method="CARD",status="COMPLETED"} 1.0' in text
    assert 'orchestrator_events{status="pending"} 3.0' in text
    assert 'orchestrator_step_seconds_count{step="create_order"}' in text
    assert "orchestrator_overdue_checkouts 0.0" in text
    assert c.id not in text  # no per-checkout labels


def test_gateway_endpoints_are_labelled_without_ids():
    from orchestrator.metrics import endpoint

    assert endpoint("POST", "/api/pay/v1/orders/v1-2611-aa-Xy9/payments") == "POST /api/pay/v1/orders/{id}/payments"
    assert endpoint("GET", "/api/pay/v1/orders/reference/b-51d4") == "GET /api/pay/v1/orders/reference/{id}"

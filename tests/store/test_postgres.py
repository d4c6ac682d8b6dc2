"""The same saga on PostgreSQL (``DATABASE_URL=postgresql://…``), on a throwaway local server."""

from __future__ import annotations

from orchestrator.domain.saga import State
from orchestrator.merchant.schemas import CheckoutIn
from orchestrator.saga.sweeps import sweep_due
from tests.conftest import at_once


def checkout(h, pre_auth=False, amount=5000):
    body = CheckoutIn.model_validate({
        "amount": {"value": amount, "currency": "INR"}, "pre_auth": pre_auth,
        "card": {"number": "4012001037141112", "name": "K", "cvv": "123", "expiry_month": "12",
                 "expiry_year": "2030"}})
    row, _ = h.service.create(body)
    h.drain()
    h.service.submit_otp(row.id, "123456")
    h.drain()
    return h.deps.repo.get(row.id)


def test_migrations_match_the_models_on_postgres(pg_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from orchestrator.store.database import is_postgres, make_engine
    from orchestrator.store.migrate import upgrade

    upgrade(pg_url)
    engine = make_engine(pg_url)
    assert is_postgres(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                SQLModel.metadata) == []


def test_checkout_capture_and_refund_on_postgres(pg):
    c = checkout(pg, pre_auth=True)
    assert c.state == "AUTHORIZED"
    pg.service.deliver(c.id, 4000)
    pg.drain()
    done = pg.deps.repo.get(c.id)
    assert done.state == "COMPLETED" and done.captured_amount == 4000
    refund, _ = pg.service.refund(c.id, 1500, None)
    pg.drain()
    assert pg.deps.repo.get(c.id).refunded_amount == 1500
    assert [t.to_state for t in pg.deps.repo.history(c.id)][-2:] == ["CAPTURING", "COMPLETED"]


def test_concurrent_sweeps_skip_locked_rows_on_postgres(pg):
    rows = [checkout(pg, pre_auth=True) for _ in range(5)]
    for c in rows:
        pg.service.deliver(c.id, None)
    pg.queue.clear()
    pg.clock.advance(pg.deps.settings.step_lease_seconds + 1)
    counts = at_once(lambda: sweep_due(pg.deps), 5)
    assert sum(counts) == 5 and sorted(i for _, i in pg.queue) == sorted(c.id for c in rows)


def test_compare_and_set_refuses_a_backward_move_on_postgres(pg):
    c = checkout(pg)
    assert c.state == "COMPLETED"
    from orchestrator.domain.saga import Fact, Source

    assert pg.deps.engine.apply(c.id, Fact.PLURAL_PAYMENT_FAILED, Source.WEBHOOK, "late") is None


def test_money_columns_hold_amounts_beyond_32_bits_on_postgres(pg, monkeypatch):
    import requests

    # above Plural's usual ceiling: a merchant with another agreement, on both sides
    monkeypatch.setattr(pg.service.settings, "max_order_amount", 2**31 + 7)
    requests.put(f"{pg.sandbox_url}/sandbox/config", json={"max_order_amount": 2**31 + 7}, timeout=5).raise_for_status()
    try:
        c = checkout(pg, amount=2**31 + 7)
    finally:
        requests.put(f"{pg.sandbox_url}/sandbox/config", json={"max_order_amount": 100_000_000}, timeout=5)
    assert c.state == "COMPLETED" and c.amount_value == 2**31 + 7 and c.captured_amount == 2**31 + 7


def test_concurrent_refund_settlements_lose_no_update_on_postgres(pg):
    from tests.saga.test_engine import settle_refunds_at_once

    c = checkout(pg, amount=10000)
    assert settle_refunds_at_once(pg, c)
    assert pg.deps.repo.get(c.id).refunded_amount == 10000


def test_two_runs_of_one_step_on_postgres_claim_it_once(pg):
    from orchestrator.store.models import Checkout

    c = checkout(pg)
    tokens = at_once(lambda: pg.deps.repo.claim(Checkout, c.id, 60), 6)
    assert len([t for t in tokens if t]) == 1


def test_writes_that_change_nothing_keep_the_connections_prepared_statements_on_postgres(pg, pg_url):
    """psycopg forgets a connection's prepared statements whenever it rolls back: a move that
    decides nothing, and a compare-and-set that finds the row changed, end with a COMMIT."""
    from sqlalchemy import text

    from orchestrator.store.database import make_engine
    from orchestrator.store.repo import Repo

    c = checkout(pg)
    repo = Repo(make_engine(pg_url, pool_size=1, max_overflow=0))
    for _ in range(8):  # psycopg prepares a statement on its fifth run
        assert repo.move(c.id, lambda _row: None, reason="nothing to do") is None
        assert repo.note(c.id, states={State.NEW}, error_code="x") is False
    with repo.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar() > 0


def test_a_first_write_ahead_is_one_statement_that_takes_the_claim_once_on_postgres(pg):
    """Six runs that read the same row write ahead at once: one takes the checkout and adds its
    attempt; the others lose the claim and add nothing."""
    from orchestrator.store.claims import Claim, LostClaim

    c = checkout(pg)
    repo = pg.deps.repo
    before = len(repo.attempts(c.id))
    claims = [Claim(version=c.version, lease_seconds=60) for _ in range(6)]

    def write_ahead(claim):
        try:
            return repo.begin_attempt(c.id, "poll_order", None, "t", claim=claim)
        except LostClaim:
            return None

    added = at_once(lambda: write_ahead(claims.pop()), 6)
    assert len([a for a in added if a is not None]) == 1
    assert len(repo.attempts(c.id)) == before + 1
    row = repo.get(c.id)
    assert row.version == c.version + 1 and row.claim_token is not None


def test_deliveries_at_once_move_once_and_write_one_history_row_on_postgres(pg):
    """The move and its history row are one statement on PostgreSQL: six deliveries at once make
    one move to CAPTURING, one history row, and the history still chains."""
    c = checkout(pg, pre_auth=True)
    at_once(lambda: pg.service.deliver(c.id, 3000), 6)
    history = pg.deps.repo.history(c.id)
    assert [t.to_state for t in history].count("CAPTURING") == 1
    assert all(after.from_state == before.to_state for before, after in zip(history, history[1:]))
    row = pg.deps.repo.get(c.id)
    assert row.state == "CAPTURING" and row.capture_amount == 3000 and row.version == c.version + 1


def test_claims_are_renewed_together_only_where_their_tokens_hold_on_postgres(pg):
    """One renewal moves the ends of several live claims in one statement; a claim taken over
    since is left as its new holder set it."""
    import datetime as dt

    from orchestrator.store.models import Checkout, aware

    repo = pg.deps.repo
    kept, taken = checkout(pg), checkout(pg)
    tokens = {c.id: repo.claim(Checkout, c.id, 5) for c in (kept, taken)}
    pg.clock.advance(6)  # both lapse; another run takes the second
    rival = repo.claim(Checkout, taken.id, 5)
    rivals_end = aware(repo.get(taken.id).claim_until)
    until = pg.clock() + dt.timedelta(seconds=30)
    repo.renew(Checkout, [(c.id, tokens[c.id], until) for c in (kept, taken)])
    assert aware(repo.get(kept.id).claim_until) == until
    assert repo.get(taken.id).claim_token == rival and aware(repo.get(taken.id).claim_until) == rivals_end


def test_a_webhook_batch_is_renewed_while_held_and_released_once_it_lapses_on_postgres(pg):
    from orchestrator.store.models import WebhookEvent
    from tests.inbound.test_webhooks import claimed_batch, events
    from orchestrator.inbound.webhooks import retry_deferred

    lease = pg.deps.leases.lease_seconds
    event = claimed_batch(pg)
    with pg.deps.leases.holding(WebhookEvent, event.claim, lambda: event.claim):
        pg.clock.advance(lease * 2 / 3)
        assert pg.deps.leases.renew() == 1
        pg.clock.advance(lease * 2 / 3)
        retry_deferred(pg.deps)
        assert [e.status for e in events(pg)] == ["processing"]
    pg.clock.advance(lease)  # no longer renewed: the claim lapses
    retry_deferred(pg.deps)
    assert [e.status for e in events(pg)] == ["pending"]


# --- a move in one statement (decided from a plain read, written compare-and-set) -------------


def test_every_public_change_writes_its_event_with_the_move_on_postgres(pg):
    from tests.outbound import test_events

    test_events.test_every_change_of_public_status_writes_one_event_carrying_the_checkout_as_it_was(pg)
    test_events.test_each_public_change_is_announced_with_the_view_its_event_carries(pg)


def test_a_move_whose_row_changed_after_its_read_decides_again_on_the_row_as_it_is_on_postgres(pg):
    """Another writer changes the checkout between the move's read and its write: the move's
    compare-and-set finds it changed, writes nothing of its own, and decides again from the row
    as it now is (holding it); the history and the events show the one move made."""
    import json

    from orchestrator.outbound import outbox
    from orchestrator.domain import saga
    from orchestrator.domain.saga import Fact, Source
    from tests.outbound.test_events import events_of

    c = checkout(pg, pre_auth=True)  # AUTHORIZED
    repo, seen = pg.deps.repo, []
    events_before = len(events_of(pg, c.id))

    def plan(row):
        seen.append((row.version, row.capture_amount))
        if len(seen) == 1:  # between this read and the write, a delivery of 3000 is recorded
            assert repo.note(c.id, states={State.AUTHORIZED}, capture_amount=3000)
        return State.CAPTURING, {"capture_amount": row.capture_amount or 1}

    before, after = repo.move(c.id, plan, reason="deliver", fact=Fact.DELIVERED.value,
                              source=Source.MERCHANT.value, record=outbox.checkout_change)
    assert seen == [(c.version, None), (c.version + 1, 3000)]  # decided again, from the noted row
    row = repo.get(c.id)
    assert row.state == "CAPTURING" and row.capture_amount == 3000 and row.version == c.version + 2
    assert [t.to_state for t in repo.history(c.id)].count("CAPTURING") == 1
    events = events_of(pg, c.id)
    assert saga.public_change(State.AUTHORIZED, State.CAPTURING) is not None
    assert len(events) == events_before + 1  # one event, of the move made
    assert json.loads(events[-1].payload) == pg.service.show(c.id)
    assert after.version == row.version and before.version == c.version + 1


def test_a_runs_call_outcomes_are_written_with_its_move_and_only_if_it_moves_on_postgres(pg):
    """A run's pending call outcomes go in the move's statement: written with the move, and left
    pending (for the run's next write) when the move lost its claim."""
    import uuid

    import pytest
    from sqlalchemy import text

    from orchestrator.store.claims import Claim, LostClaim

    c = checkout(pg, pre_auth=True)
    repo = pg.deps.repo
    claim = Claim(version=c.version, lease_seconds=60)
    attempt = repo.begin_attempt(c.id, "capture", f"ref-{uuid.uuid4().hex[:8]}", "t", claim=claim)
    finish = [(attempt, "ok", "captured")]
    moved = repo.move(c.id, lambda row: (State.CAPTURING, {"capture_amount": 10}), reason="r", claim=claim,
                      finish=finish)
    assert moved is not None and finish == []
    assert [(a.outcome, a.detail) for a in repo.attempts(c.id) if a.id == attempt] == [("ok", "captured")]
    assert repo.get(c.id).claim_token is None  # the run's move gave its claim back

    # a run whose claim is taken over between its move's read and its write
    claim = Claim(version=c.version + 2, lease_seconds=60)
    other = repo.begin_attempt(c.id, "capture", None, "t", claim=claim)
    pending = [(other, "ok", None)]

    def plan(row):
        with repo.engine.connect() as conn:
            conn.execute(text("UPDATE checkout SET claim_token = 'thief' WHERE id = :id"), {"id": c.id})
            conn.commit()
        return State.COMPLETED, {}

    with pytest.raises(LostClaim):
        repo.move(c.id, plan, reason="r", claim=claim, finish=pending)
    assert pending == [(other, "ok", None)]  # still the run's to write
    assert [a.outcome for a in repo.attempts(c.id) if a.id == other] == ["in_flight"]
    assert repo.get(c.id).state == "CAPTURING"


def test_times_are_shown_in_utc_whatever_the_servers_time_zone_on_postgres(pg_url, sandbox, sandbox_settings):
    """A server (or database) set to India's time zone hands back times in +05:30: the checkout's
    view and its history still show the instant in UTC."""
    import datetime as dt

    import psycopg
    from sqlalchemy import text

    from tests.conftest import make_harness, sandbox_mode

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {pg_url.rsplit('/', 1)[1]} SET timezone TO 'Asia/Kolkata'")
    sandbox_mode(sandbox.url, "strict")
    h = make_harness(pg_url, sandbox, sandbox_settings)
    c = checkout(h)
    view = h.service.show(c.id)
    for engine in (h.deps.repo.engine, h.deps.repo.read_engine):  # every session: its writers', its readers'
        with engine.connect() as conn:
            assert conn.execute(text("SELECT created_at FROM checkout")).scalar().utcoffset() == dt.timedelta(0)
    now = dt.datetime.now(dt.timezone.utc)
    for at in [view["created_at"], view["updated_at"], *(t["at"] for t in view["history"])]:
        assert at.endswith("Z") and abs(dt.datetime.fromisoformat(at) - now) < dt.timedelta(minutes=2), at


def test_creates_at_once_with_one_key_create_one_checkout_and_answer_alike_on_postgres(pg):
    """The key is stored in the checkout's own transaction: on PostgreSQL the others wait on its
    unique index, then replay the first answer."""
    from tests.entrypoints import test_api_errors

    test_api_errors.test_creates_at_once_with_one_key_create_one_checkout_and_answer_alike(pg)


def test_a_create_is_one_statement_with_its_key_and_a_taken_reference_writes_nothing_on_postgres(pg):
    """On PostgreSQL a create (the checkout, its first history row, its Idempotency-Key with the
    answer) is one statement: a new one writes all three; a create whose merchant reference is
    taken writes no checkout, answers with the existing one, and keeps that answer for its key."""
    import uuid

    from fastapi.testclient import TestClient

    from orchestrator.entrypoints.api.app import create_app
    from orchestrator.store.idempotency import IdempotencyStore
    from tests.entrypoints.test_api import KEY, body
    from tests.entrypoints.test_api_errors import keyed_rows

    app = create_app(lambda: pg.service, KEY, idempotency=IdempotencyStore(pg.deps.repo))
    b, first_key, second_key = body(), f"idem-{uuid.uuid4().hex}", f"idem-{uuid.uuid4().hex}"
    with TestClient(app) as api:
        api.headers["X-API-Key"] = KEY
        first = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": first_key})
        again = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": first_key})
        taken = api.post("/v1/checkouts", json=b, headers={"Idempotency-Key": second_key})
    assert first.status_code == 202 and again.text == first.text and again.headers["Idempotent-Replayed"] == "true"
    history = pg.deps.repo.history(first.json()["id"])
    assert [(t.from_state, t.to_state) for t in history] == [(None, "NEW")]
    assert taken.status_code == 200 and taken.json()["id"] == first.json()["id"]
    assert [(r.status_code, r.response_body) for r in keyed_rows(pg, second_key)] == [(200, taken.text)]
    assert [s.value for s, _ in pg.queue] == ["create_order"]


def test_deliveries_and_cancels_at_once_leave_one_chained_history_and_its_events_on_postgres(pg):
    """Merchant actions racing on one authorized checkout (moves decided from plain reads,
    compare-and-set, decided again when they lose): each checkout ends with one history that
    chains, either a capture or a cancel (never both), and one event per public change along it,
    in order, the last equal to what a read shows."""
    import itertools
    import json

    from orchestrator.domain import saga
    from orchestrator.domain.saga import Fact, Source
    from tests.outbound.test_events import events_of

    engine = pg.service.engine
    for _ in range(4):
        c = checkout(pg, pre_auth=True)
        turn = itertools.count()

        def act():  # the engine's own facts, as the service hands them over (its checks skipped)
            if next(turn) % 2:
                return engine.apply(c.id, Fact.CANCEL_REQUESTED, Source.MERCHANT, "cancel",
                                    fields={"cancel_reason": "MERCHANT"})
            return engine.apply(c.id, Fact.DELIVERED, Source.MERCHANT, "delivered",
                                fields={"delivered_at": pg.deps.clock(), "capture_amount": 3000})

        at_once(act, 12)
        history = pg.deps.repo.history(c.id)
        assert all(after.from_state == before.to_state for before, after in zip(history, history[1:]))
        reached = {t.to_state for t in history}
        assert ("CAPTURING" in reached) != ("CANCELLING" in reached), reached
        changes = [saga.public_change(State(t.from_state), State(t.to_state)) for t in history if t.from_state]
        events = [json.loads(e.payload) for e in events_of(pg, c.id)]
        assert [e["status"] for e in events] == [status for status in changes if status is not None]
        assert [e["version"] for e in events] == sorted({e["version"] for e in events})
        assert events[-1] == pg.service.show(c.id) | {"next_action": events[-1]["next_action"]}

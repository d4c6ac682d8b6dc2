"""Events to the merchant's backend: the outbox (written with the change it reports) and its
delivery (signed, in order per checkout, retried with backoff, every attempt recorded)."""

from __future__ import annotations

import json
import time

import pytest
from sqlmodel import col, select

from orchestrator.outbound import delivery, outbox
from orchestrator.store.models import MerchantEvent, MerchantEventAttempt
from devkit.merchant_client import EventRejected, OrchestratorClient
from tests.receiver import Receiver
from tests.saga.test_steps import checkout, received


def events_of(h, checkout_id=None):
    with h.deps.repo.read_session() as s:
        q = select(MerchantEvent).order_by(col(MerchantEvent.id))
        if checkout_id:
            q = q.where(MerchantEvent.subject_id == checkout_id)
        return list(s.exec(q))


def attempts_of(h, event):
    with h.deps.repo.read_session() as s:
        return list(s.exec(select(MerchantEventAttempt).where(MerchantEventAttempt.event_id == event.id)
                           .order_by(col(MerchantEventAttempt.id))))


def completed(h):
    c = checkout(h)
    assert c.state == "AWAITING_OTP"
    h.service.submit_otp(c.id, "123456")
    h.drain()
    assert h.state(c.id) == "COMPLETED"
    return c


def pushing(h, url, **more):
    h.redeps(settings=h.deps.settings.model_copy(update={"merchant_webhook_url": url, **more}))
    return h.deps.settings


# --- the outbox ------------------------------------------------------------------------------


def test_every_change_of_public_status_writes_one_event_carrying_the_checkout_as_it_was(harness):
    h = harness
    c = completed(h)
    events = events_of(h, c.id)
    assert [e.type for e in events] == ["checkout.awaiting_otp", "checkout.processing", "checkout.completed"]
    for e in events:
        data = json.loads(e.payload)
        assert data["id"] == c.id and e.type == "checkout." + data["status"].lower()
        assert e.event_id.startswith("evt_") and e.status == "pending"
    last = json.loads(events[-1].payload)
    assert last == h.service.show(c.id) | {"next_action": None}  # the view GET gives
    assert len({e.event_id for e in events}) == 3


def test_each_public_change_is_announced_with_the_view_its_event_carries(harness):
    """The long poll answers with the announced view: it must be the event's payload, and the last
    one what a read shows."""
    h = harness
    heard: list[tuple[str, str, int, str | None]] = []
    h.redeps(announce=lambda *said: heard.append(said))
    h.service.engine.announce = h.deps.announce
    c = completed(h)
    mine = [said for said in heard if said[0] == c.id]
    assert [status for _, status, _, _ in mine] == ["AWAITING_OTP", "PROCESSING", "COMPLETED"]
    payloads = [json.loads(e.payload) for e in events_of(h, c.id)]
    shown = [json.loads(view) for _, _, _, view in mine if view]
    assert shown == payloads[-len(shown):] and len(shown) == len(mine)
    assert [view["version"] for view in shown] == [version for _, _, version, _ in mine]
    assert shown[-1] == h.service.show(c.id)


def test_no_event_is_written_for_a_change_that_was_rolled_back(harness, monkeypatch):
    """The event is written in the move's transaction: if anything in it fails, neither the move
    nor its event exists."""
    from orchestrator.saga import runner
    from orchestrator.domain.saga import Step

    h = harness
    c = received(h)
    h.queue.clear()
    real = outbox.checkout_change
    made = []

    def change_then_note(*args):
        made.append(real(*args))
        return made[-1]

    def fail(self, conn, finish):
        raise RuntimeError("the transaction fails after the event row was added")

    for step in (Step.CREATE_ORDER, Step.CARD_DETAILS, Step.CREATE_PAYMENT, Step.GENERATE_OTP):
        runner.run(h.deps, step, c.id, "t")
    assert h.state(c.id) == "PAYMENT_CREATED" or h.state(c.id) == "AWAITING_OTP"
    before = h.state(c.id)
    count = len(events_of(h, c.id))
    monkeypatch.setattr(outbox, "checkout_change", change_then_note)
    monkeypatch.setattr(type(h.deps.repo), "_commit", fail)
    with pytest.raises(RuntimeError):
        h.service.cancel(c.id)
    assert made and made[-1] is not None  # the event was made, and its row added before the failure
    assert h.state(c.id) == before and len(events_of(h, c.id)) == count


def test_a_processed_refund_writes_its_event_after_the_checkouts(harness):
    h = harness
    c = completed(h)
    h.service.refund(c.id, None, None)
    h.drain()
    h.run_due()
    types = [e.type for e in events_of(h, c.id)]
    assert types[-1] == "refund.processed", types
    refund = json.loads(events_of(h, c.id)[-1].payload)
    assert refund["status"] == "PROCESSED" and refund["checkout_id"] == c.id


# --- delivery --------------------------------------------------------------------------------


def test_events_are_delivered_signed_and_in_order(harness):
    h = harness
    c = completed(h)
    with Receiver() as rx:
        settings = pushing(h, rx.url)
        assert delivery.deliver_due(h.deps.repo, settings, clock=h.clock) == 3
        got = rx.delivered()
    assert [e["type"] for e in got] == ["checkout.awaiting_otp", "checkout.processing", "checkout.completed"]
    secret = settings.merchant_webhook_secret.get_secret_value()
    for hit in rx.hits:
        event = OrchestratorClient.verify_event(secret, hit["headers"], hit["body"])
        assert hit["headers"]["webhook-id"] == event["id"]
    last = rx.hits[-1]
    with pytest.raises(EventRejected):  # altered on the way
        OrchestratorClient.verify_event(secret, last["headers"], last["body"].replace(b"COMPLETED", b"FAILED"))
    with pytest.raises(EventRejected):  # signed with another secret
        OrchestratorClient.verify_event("whsec_" + "b3RoZXI=", last["headers"], last["body"])
    assert all(e.status == "delivered" for e in events_of(h, c.id))


def test_a_failing_answer_is_retried_with_backoff_and_the_same_event_id_and_every_attempt_is_kept(harness):
    h = harness
    c = completed(h)
    with Receiver(answers=[500]) as rx:
        settings = pushing(h, rx.url)
        delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
        first = events_of(h, c.id)[0]
        assert first.status == "pending" and first.attempts == 1
        assert [e.status for e in events_of(h, c.id)[1:]] == ["pending", "pending"]  # in order: they wait
        assert len(rx.hits) == 1
        h.clock.advance(delivery.BACKOFF[0] + 1)
        delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
    ids = [hit["headers"]["webhook-id"] for hit in rx.hits]
    assert ids[0] == ids[1] == first.event_id
    assert [(a.outcome, a.status_code) for a in attempts_of(h, first)] == [("failed", 500), ("delivered", 200)]
    assert [e["type"] for e in rx.delivered()] == ["checkout.awaiting_otp", "checkout.processing", "checkout.completed"]


def test_a_receiver_down_longer_than_the_first_retries_gets_the_events_later_in_order(harness):
    from devkit.redis_server import free_port

    h = harness
    c = completed(h)
    down = f"http://127.0.0.1:{free_port()}/events"  # nobody listens
    settings = pushing(h, down)
    for delay in delivery.BACKOFF[:3]:
        delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
        h.clock.advance(delay + 1)
    first = events_of(h, c.id)[0]
    assert first.attempts == 3 and first.status == "pending" and first.last_error
    assert all(a.status_code is None for a in attempts_of(h, first))
    with Receiver() as rx:
        settings = pushing(h, rx.url)
        h.clock.advance(delivery.BACKOFF[3] + 1)
        delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
    assert [e["type"] for e in rx.delivered()] == ["checkout.awaiting_otp", "checkout.processing", "checkout.completed"]


def test_an_event_whose_retries_ran_out_is_failed_visibly_and_can_be_redelivered(harness):
    h = harness
    c = completed(h)
    with Receiver(answers=[503] * 50) as rx:
        settings = pushing(h, rx.url, merchant_event_retry_seconds=200.0)
        for _ in range(6):
            delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
            h.clock.advance(120)
        first = events_of(h, c.id)[0]
        assert first.status == "failed" and first.attempts >= 3
        rx.answers.clear()
        assert h.service.redeliver(first.event_id)["delivery"]["status"] == "pending"
        delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
        assert events_of(h, c.id)[0].status == "delivered"
        assert rx.hits[-1]["headers"]["webhook-id"] == first.event_id


def test_events_can_also_go_to_a_celery_task_once_each(harness):
    h = harness
    c = completed(h)
    sent = []
    settings = h.deps.settings.model_copy(update={"merchant_events_task": "myshop.tasks.on_payment_event"})
    delivery.deliver_due(h.deps.repo, settings, send_task=lambda name, event: sent.append((name, event["id"])),
                         clock=h.clock)
    delivery.deliver_due(h.deps.repo, settings, send_task=lambda name, event: sent.append((name, event["id"])),
                         clock=h.clock)
    assert [name for name, _ in sent] == ["myshop.tasks.on_payment_event"] * 3
    assert [i for _, i in sent] == [e.event_id for e in events_of(h, c.id)]


def test_without_a_url_or_a_task_events_wait_to_be_pulled(harness):
    h = harness
    c = completed(h)
    assert delivery.deliver_due(h.deps.repo, h.deps.settings, clock=h.clock) == 0
    page = h.service.events(None, None, 2)
    assert [e["type"] for e in page["events"]] == ["checkout.awaiting_otp", "checkout.processing"]
    rest = h.service.events(page["next"], None, 10)
    assert [e["type"] for e in rest["events"]] == ["checkout.completed"]
    assert h.service.events(rest["next"], None, 10)["events"] == []
    only = h.service.events(None, "checkout.completed", 10)["events"]
    assert [e["data"]["id"] for e in only] == [c.id]


def test_the_backoff_between_retries_is_a_setting(harness):
    h = harness
    c = completed(h)
    with Receiver(answers=[500, 500]) as rx:
        settings = pushing(h, rx.url, merchant_event_backoff="7,11")
        delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
        first = events_of(h, c.id)[0]
        assert (first.next_attempt_at.replace(tzinfo=None) - h.clock().replace(tzinfo=None)).total_seconds() \
            == pytest.approx(7, abs=1)


@pytest.mark.parametrize("url, task, kicks", [(None, None, 0), ("http://shop/events", None, 1),
                                              (None, "shop.events", 1)])
def test_the_deliverer_is_kicked_only_when_there_is_somewhere_to_push(url, task, kicks):
    import types

    import fakeredis

    redis = fakeredis.FakeRedis()
    published: list[int] = []
    settings = types.SimpleNamespace(merchant_webhook_url=url, merchant_events_task=task)
    kick = delivery.redis_kick(redis, lambda: published.append(1), settings)
    kick()
    kick()  # a second kick while the first message is due publishes nothing more
    assert len(published) == kicks
    assert bool(redis.exists(delivery.KICK_KEY)) == bool(kicks)


# --- redirects, secrets, failures, claims, destinations (issue 22) ----------------------------


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt_with_its_status(harness, code):
    h = harness
    c = completed(h)
    with Receiver() as elsewhere, Receiver(answers=[code], location=elsewhere.url) as rx:
        settings = pushing(h, rx.url)
        delivery.deliver_due(h.deps.repo, settings, clock=h.clock)
        first = events_of(h, c.id)[0]
        assert elsewhere.hits == []  # neither a GET of a login page nor the signed body re-posted
    assert [(a.outcome, a.status_code) for a in attempts_of(h, first)] == [("failed", code)]
    assert first.status == "pending" and first.attempts == 1


UNPADDED = "whsec_cmVhbC1zaG9wLXNlY3JldC0xMjM0NQ"  # "real-shop-secret-12345", its "==" left off


def test_an_unpadded_secret_that_passes_the_settings_signs_events_the_receiver_verifies(harness):
    from pydantic import SecretStr

    from config import load_settings

    load_settings(merchant_webhook_secret=UNPADDED)  # accepted, as standardwebhooks accepts it
    h = harness
    c = completed(h)
    with Receiver() as rx:
        settings = pushing(h, rx.url, merchant_webhook_secret=SecretStr(UNPADDED))
        assert delivery.deliver_due(h.deps.repo, settings, clock=h.clock) == 3
    for hit in rx.hits:
        OrchestratorClient.verify_event(UNPADDED, hit["headers"], hit["body"])
    assert all(e.status == "delivered" for e in events_of(h, c.id))


def test_a_delivery_that_raises_records_a_failed_attempt_and_frees_the_event(harness, monkeypatch):
    h = harness
    c = completed(h)

    def broken(*_args, **_kwargs):
        raise RuntimeError("signer broke")

    monkeypatch.setattr(delivery, "webhook_headers", broken)
    with Receiver() as rx:
        settings = pushing(h, rx.url)
        assert delivery.deliver_due(h.deps.repo, settings, clock=h.clock) == 1
        assert rx.hits == []
    first = events_of(h, c.id)[0]
    assert first.status == "pending" and first.attempts == 1 and first.claim is None
    assert [(a.outcome, a.status_code) for a in attempts_of(h, first)] == [("failed", None)]
    assert "RuntimeError" in first.last_error and "signer broke" not in first.last_error


def test_two_senders_and_a_slow_receiver_deliver_each_event_once_in_order_per_checkout(harness):
    """Each send holds its own claim: however long the others take, no claim lapses while its
    event waits, so no second sender takes it over and sends it again."""
    import datetime as dt
    import threading
    import time
    from collections import Counter

    h = harness
    checkouts = [completed(h) for _ in range(12)]
    events = {e.event_id: e for c in checkouts for e in events_of(h, c.id)}
    start, t0 = h.clock(), time.monotonic()

    def fast():  # 10 seconds a second: a claim lapses after 0.7 s, a send takes 0.1 s
        return start + dt.timedelta(seconds=(time.monotonic() - t0) * 10)

    stop, errors = threading.Event(), []
    with Receiver(delay=0.1) as rx:
        settings = pushing(h, rx.url, merchant_webhook_timeout=1.0)
        assert delivery.claim_seconds(settings) == 7.0

        def sender():
            try:
                while not stop.is_set():
                    delivery.deliver_due(h.deps.repo, settings, clock=fast, parallel=1)
                    stop.wait(0.02)
            except Exception as exc:  # pragma: no cover - shown by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(e.status == "delivered" for e in events_of(h)):
            time.sleep(0.05)
        time.sleep(0.3)  # a late duplicate would land meanwhile
        stop.set()
        for t in threads:
            t.join()
        sent = [json.loads(hit["body"])["id"] for hit in rx.hits]
    assert errors == []
    assert Counter(sent) == Counter(events.keys())  # every event, each once
    for c in checkouts:
        mine = [e.event_id for e in events_of(h, c.id)]
        assert [i for i in sent if i in mine] == mine
        assert all(len(attempts_of(h, e)) == 1 for e in events_of(h, c.id))


def _one_event(h, now):
    import uuid

    with h.deps.repo.session() as s:
        row = MerchantEvent(event_id="evt_" + uuid.uuid4().hex, type="checkout.completed",
                            subject_id="chk_" + uuid.uuid4().hex[:12], payload="{}", created_at=now,
                            status="pending", attempts=0, next_attempt_at=now)
        s.add(row)
        s.commit()
        s.refresh(row)
        return row.id


def test_a_sender_whose_claim_was_taken_over_records_nothing(harness):
    import datetime as dt

    h = harness
    now = h.clock()
    eid = _one_event(h, now)
    a = delivery.claim(h.deps.repo, eid, now, 7.0)
    assert a is not None and delivery.claim(h.deps.repo, eid, now, 7.0) is None  # held: not twice
    later = now + dt.timedelta(seconds=8)
    b = delivery.claim(h.deps.repo, eid, later, 7.0)  # A's claim lapsed: B takes it over
    assert b is not None and b.claim != a.claim
    ok = delivery.Result("delivered", 200, 1, None)
    assert delivery.record(h.deps.repo, a, ok, later, 1e9) is None
    assert delivery.record(h.deps.repo, b, ok, later, 1e9) == "delivered"
    with h.deps.repo.read_session() as s:
        row = s.get(MerchantEvent, eid)
    assert row.attempts == 1 and len(attempts_of(h, row)) == 1


def test_claim_fencing_holds_whatever_the_interleaving(harness):
    """Three senders claim, record and wait in any order: a claim is won only when the event is
    pending, due and free (or its claim lapsed); a record counts only while its claim holds."""
    import datetime as dt

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    h = harness
    lease = 7.0
    backoff = (1.0,) * 100
    ops = st.lists(st.tuples(st.sampled_from(["claim", "ok", "fail", "lapse", "wait"]), st.integers(0, 2)),
                   max_size=30)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(ops)
    def run(steps):
        now = h.clock()
        eid = _one_event(h, now)
        model = {"status": "pending", "claim": None, "claimed_at": None, "next_at": now, "attempts": 0}
        held: dict[int, MerchantEvent] = {}
        for op, who in steps:
            if op == "claim" and who not in held:
                free = model["claim"] is None or model["claimed_at"] < now - dt.timedelta(seconds=lease)
                expect = model["status"] == "pending" and model["next_at"] <= now and free
                got = delivery.claim(h.deps.repo, eid, now, lease)
                assert (got is not None) == expect
                if got is not None:
                    held[who] = got
                    model.update(claim=got.claim, claimed_at=now)
            elif op in ("ok", "fail") and who in held:
                mine = held.pop(who)
                result = delivery.Result("delivered", 200, 1, None) if op == "ok" else \
                    delivery.Result("failed", 500, 1, "no")
                status = delivery.record(h.deps.repo, mine, result, now, 1e9, backoff)
                holds = mine.claim == model["claim"]
                assert (status is not None) == holds
                if holds:
                    model["attempts"] += 1
                    model["claim"] = None
                    if op == "ok":
                        model.update(status="delivered", next_at=None)
                    else:
                        model["next_at"] = now + dt.timedelta(seconds=1)
            elif op == "lapse":
                now += dt.timedelta(seconds=lease + 1)
            elif op == "wait":
                now += dt.timedelta(seconds=0.5)
            with h.deps.repo.read_session() as s:
                row = s.get(MerchantEvent, eid)
            assert (row.status, row.claim, row.attempts) == (model["status"], model["claim"], model["attempts"])
            assert len(attempts_of(h, row)) == model["attempts"]

    run()


class _Answer:
    status_code = 200
    text = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Http:
    """A session that records what would have been sent, and sends nothing."""

    def __init__(self):
        self.posts = []

    def post(self, url, **kwargs):
        self.posts.append((url, kwargs))
        return _Answer()


def test_outside_the_sandbox_a_host_resolving_to_a_private_address_at_send_time_is_refused(harness, monkeypatch):
    import config.settings as cfg

    h = harness
    c = completed(h)
    monkeypatch.setattr(cfg, "resolve_host", lambda host, port: {"93.184.216.34"})
    settings = pushing(h, "https://shop.example/events", plural_env=cfg.PluralEnv.production)
    assert settings.merchant_url_problem() is None  # what the settings' check saw
    monkeypatch.setattr(cfg, "resolve_host", lambda host, port: {"169.254.169.254"})  # rebound since
    http = _Http()
    delivery.deliver_due(h.deps.repo, settings, http=http, clock=h.clock)
    assert http.posts == []
    first = events_of(h, c.id)[0]
    assert [(a.outcome, a.status_code) for a in attempts_of(h, first)] == [("failed", None)]
    assert "non-public" in first.last_error and first.status == "pending"


def test_a_private_destination_is_sent_to_when_the_setting_allows_it_and_never_with_redirects(harness, monkeypatch):
    import config.settings as cfg

    h = harness
    c = completed(h)
    monkeypatch.setattr(cfg, "resolve_host", lambda host, port: {"10.0.0.7"})
    settings = pushing(h, "https://shop.internal/events", plural_env=cfg.PluralEnv.production,
                       merchant_webhook_allow_private=True)
    http = _Http()
    assert delivery.deliver_due(h.deps.repo, settings, http=http, clock=h.clock) == 3
    assert [url for url, _ in http.posts] == ["https://shop.internal/events"] * 3
    assert all(kwargs["allow_redirects"] is False for _, kwargs in http.posts)
    assert all(e.status == "delivered" for e in events_of(h, c.id))


class _Trickle:
    """A raw endpoint that answers one byte every ``pause`` seconds (``body``: bytes after the head)."""

    def __init__(self, head: bytes, body: bytes = b"", pause: float = 0.2):
        import socket
        import threading

        self.head, self.body, self.pause = head, body, pause
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/events"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            try:
                conn.recv(65536)
                conn.sendall(self.head)
                for b in self.body:
                    conn.sendall(bytes([b]))
                    time.sleep(self.pause)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.server.close()


def test_an_endpoint_answering_byte_by_byte_is_cut_off_at_the_attempts_deadline(harness):
    h = harness
    completed(h)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: "
    slow = _Trickle(b"", head + b"a" * 60 + b"\r\n\r\nok", pause=0.1)  # about 9 s to answer
    try:
        settings = pushing(h, slow.url, merchant_webhook_timeout=1.0)
        started = time.monotonic()
        result = delivery.post(settings, delivery.delivery_session(), events_of(h, None)[0])
        took = time.monotonic() - started
    finally:
        slow.close()
    assert (result.outcome, result.error) == ("failed", "deadline passed")
    assert took < delivery.claim_seconds(settings) / 2


def test_only_the_first_kilobytes_of_an_endless_error_answer_are_read(harness):
    h = harness
    completed(h)
    endless = _Trickle(b"HTTP/1.1 500 Oops\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536, pause=0)
    try:
        settings = pushing(h, endless.url, merchant_webhook_timeout=5.0)
        result = delivery.post(settings, delivery.delivery_session(), events_of(h, None)[0])
    finally:
        endless.close()
    assert (result.outcome, result.status_code) == ("failed", 500) and result.error == "x" * 200

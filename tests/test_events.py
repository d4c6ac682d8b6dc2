"""Events to the merchant's backend: the outbox (written with the change it reports) and its
delivery (signed, in order per checkout, retried with backoff, every attempt recorded)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import col, select

from orchestrator import delivery, outbox
from orchestrator.db.models import MerchantEvent, MerchantEventAttempt
from orchestrator.merchant_client import EventRejected, OrchestratorClient
from tests.receiver import Receiver
from tests.test_steps import checkout, received


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
    h.deps.settings = h.deps.settings.model_copy(update={"merchant_webhook_url": url, **more})
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
    h.deps.announce = h.service.engine.announce = lambda *said: heard.append(said)
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
    from orchestrator import dispatch
    from orchestrator.core.saga import Step

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
        dispatch.run(h.deps, step, c.id, "t")
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
    from orchestrator.redis_server import free_port

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

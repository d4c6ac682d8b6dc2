"""Two OTP submissions for one checkout at once: the one whose move wins is the OTP sent to Plural;
the other is answered 409 and leaves the winner's OTP alone."""

from __future__ import annotations

import threading

import pytest

from orchestrator.merchant.errors import CheckoutError
from tests.entrypoints.test_api import api  # noqa: F401  (the API over the harness, its key set)
from tests.saga.test_steps import checkout

RIGHT, WRONG = "123456", "654321"
WAIT = 10.0


def spy_on_sent_otps(h, monkeypatch):
    """The OTPs the submit step sends to Plural, in order."""
    sent: list[str] = []
    real = h.deps.plural.submit_otp

    def submit_otp(payment_id, otp):
        sent.append(otp)
        return real(payment_id, otp)

    monkeypatch.setattr(h.deps.plural, "submit_otp", submit_otp)
    return sent


def no_expired_otp(h, checkout_id):
    row = h.deps.repo.get(checkout_id)
    return row.error_code != "OTP_EXPIRED" and not any("expired" in t.reason for t in h.deps.repo.history(checkout_id))


def test_a_second_submission_written_before_the_first_moves_neither_replaces_nor_deletes_its_otp(harness, monkeypatch):
    h = harness
    c = checkout(h)
    assert c.state == "AWAITING_OTP"
    sent = spy_on_sent_otps(h, monkeypatch)
    first_wrote, second_wrote, first_moved = threading.Event(), threading.Event(), threading.Event()
    real_put = h.service.vault.put_otp

    def put_otp(checkout_id, otp, ttl):
        kept = real_put(checkout_id, otp, ttl)
        if otp == RIGHT:  # the first: wrote its OTP; the second writes before this one moves
            first_wrote.set()
            assert second_wrote.wait(WAIT)
        else:  # the second: passed the AWAITING_OTP check and wrote; it moves once the first has
            second_wrote.set()
            assert first_moved.wait(WAIT)
        return kept

    monkeypatch.setattr(h.service.vault, "put_otp", put_otp)
    outcomes: dict[str, object] = {}

    def submit(otp):
        try:
            outcomes[otp] = h.service.submit_otp(c.id, otp).state
        except CheckoutError as exc:
            outcomes[otp] = exc

    first = threading.Thread(target=submit, args=(RIGHT,))
    second = threading.Thread(target=lambda: first_wrote.wait(WAIT) and submit(WRONG))
    first.start()
    second.start()
    first.join(WAIT)
    first_moved.set()
    second.join(WAIT)

    assert outcomes[RIGHT] == "VERIFYING_OTP"
    lost = outcomes[WRONG]
    assert isinstance(lost, CheckoutError) and lost.status == 409 and lost.code == "INVALID_STATE"
    h.drain()
    assert sent == [RIGHT]
    assert h.deps.repo.get(c.id).state == "COMPLETED" and no_expired_otp(h, c.id)




def test_two_otps_posted_at_once_are_one_202_and_the_accepted_otp_is_the_one_sent(api, harness, monkeypatch):
    h = harness
    c = checkout(h)
    sent = spy_on_sent_otps(h, monkeypatch)
    # both requests read the checkout AWAITING_OTP before either moves it; then they race
    both_read = threading.Barrier(2, timeout=WAIT)
    reads = iter(range(2))
    real_get = h.service.get

    def get(checkout_id):
        row = real_get(checkout_id)
        if next(reads, None) is not None:
            both_read.wait()
        return row

    monkeypatch.setattr(h.service, "get", get)
    answers: dict[str, object] = {}
    threads = [threading.Thread(target=lambda otp=otp: answers.__setitem__(
        otp, api.post(f"/v1/checkouts/{c.id}/otp", json={"otp": otp}))) for otp in (RIGHT, WRONG)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)

    codes = sorted(a.status_code for a in answers.values())
    assert codes == [202, 409]
    winner = next(otp for otp, a in answers.items() if a.status_code == 202)
    loser = answers[WRONG if winner == RIGHT else RIGHT].json()
    assert loser["code"] == "INVALID_STATE" and loser["message"]
    h.drain()
    assert sent == [winner]
    assert no_expired_otp(h, c.id)
    assert loser["status"] == "PROCESSING"  # the winner's OTP was being verified
    assert h.deps.repo.get(c.id).state == ("COMPLETED" if winner == RIGHT else "AWAITING_OTP")

"""The operator's console, over the harness (the browser test is in tests/e2e/test_console_browser.py)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from orchestrator.entrypoints.api.app import create_app
from orchestrator.domain.saga import Fact, Source
from tests.outbound.test_events import completed
from tests.saga.test_steps import checkout

AUTH = ("operator", "s3cret-console")


def console(h):
    return TestClient(create_app(lambda: h.service, "k", console=AUTH))


def stuck(h):
    c = checkout(h)
    h.deps.engine.apply(c.id, Fact.GAVE_UP, Source.TIMER, "card_details failed 8 times: ServerError")
    return c


def test_the_console_needs_its_own_credential_and_is_absent_without_one(harness):
    with console(harness) as client:
        assert client.get("/console").status_code == 401
        assert client.get("/console", auth=("operator", "wrong")).status_code == 401
        assert client.get("/console", headers={"X-API-Key": "k"}).status_code == 401  # the API key is not it
        assert client.get("/console", auth=AUTH).status_code == 200
    with TestClient(create_app(lambda: harness.service, "k")) as client:
        assert client.get("/console", auth=AUTH).status_code == 404


def test_the_list_filters_by_status_and_shows_what_is_stuck(harness):
    h = harness
    done = completed(h)
    c = stuck(h)
    with console(h) as client:
        page = client.get("/console", auth=AUTH).text
        assert done.id in page and c.id in page and "card_details failed 8 times" in page
        only = client.get("/console?status=COMPLETED", auth=AUTH).text
        table = only.split('id="checkouts"')[1]
        assert done.id in table and c.id not in table


def test_a_timeline_shows_transitions_calls_webhooks_and_events(harness):
    h = harness
    c = completed(h)
    with console(h) as client:
        page = client.get(f"/console/checkouts/{c.id}", auth=AUTH).text
    for text in ("call create_order", "call submit_otp", "event checkout.completed", "VERIFYING_OTP → COMPLETED"):
        assert text in page, text
    assert "<script" not in page


def test_a_checkout_page_names_a_runs_claim_and_when_it_is_next_due(harness):
    from orchestrator.store.models import Checkout

    h = harness
    c = checkout(h)
    h.deps.repo.claim(Checkout, c.id, 30)
    held = h.deps.repo.get(c.id)
    with console(h) as client:
        page = client.get(f"/console/checkouts/{c.id}", auth=AUTH).text
    assert f"held by a run until {held.claim_until.isoformat(timespec='seconds')}" in page
    assert f"next due {held.next_due_at.isoformat(timespec='seconds')}" in page


def test_retry_from_the_console_is_recorded_under_the_operator_and_needs_the_forms_token(harness):
    h = harness
    c = stuck(h)
    with console(h) as client:
        page = client.get(f"/console/checkouts/{c.id}", auth=AUTH).text
        token = re.search(r'name="token" value="([0-9a-f]+)"', page).group(1)
        forged = client.post(f"/console/checkouts/{c.id}/retry", data={"token": "0" * 64}, auth=AUTH,
                             follow_redirects=False)
        assert forged.status_code == 403 and h.state(c.id) == "NEEDS_ATTENTION"
        done = client.post(f"/console/checkouts/{c.id}/retry", data={"token": token}, auth=AUTH,
                           follow_redirects=False)
        assert done.status_code == 303
    assert h.state(c.id) != "NEEDS_ATTENTION"
    assert h.deps.repo.history(c.id)[-1].reason == "retried by operator (console)"


# --- issue 22, item 12: not framed, and guessing the password is slowed down ----------------------


def test_every_console_answer_forbids_framing_even_a_refusal(harness):
    with console(harness) as client:
        for answer in (client.get("/console", auth=AUTH), client.get("/console"),
                       client.get("/console/checkouts/nope", auth=AUTH)):
            assert answer.headers["X-Frame-Options"] == "DENY", answer.status_code
            assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert "X-Frame-Options" not in client.get("/health").headers  # the API's own answers are left alone


def test_too_many_wrong_passwords_from_one_address_are_a_429_even_for_the_right_one(harness):
    app = create_app(lambda: harness.service, "k", console=AUTH, console_max_failures=3)
    with TestClient(app, client=("198.51.100.7", 4000)) as guesser, \
            TestClient(app, client=("198.51.100.8", 4000)) as neighbour:
        assert [guesser.get("/console", auth=("operator", f"guess-{i}")).status_code for i in range(3)] == [401] * 3
        refused = guesser.get("/console", auth=AUTH)
        assert refused.status_code == 429 and refused.json()["code"] == "TOO_MANY_REQUESTS"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert neighbour.get("/console", auth=AUTH).status_code == 200  # counted per client address


def test_failed_credentials_are_forgotten_a_minute_after_they_were_sent():
    from orchestrator.entrypoints.api.console import FailureLimit

    now = [1000.0]
    limit = FailureLimit(2, clock=lambda: now[0])
    limit.failed("a")
    now[0] += 30
    limit.failed("a")
    assert limit.retry_after("a") == 30 and limit.retry_after("b") is None
    now[0] += 30  # the first failure is a minute old
    assert limit.retry_after("a") is None

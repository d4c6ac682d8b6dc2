"""A Redis restart in the middle of checkouts (issue 8, finding 10): every answer meanwhile is
JSON (never a 500), a worker that dies is restarted by its supervisor, and every checkout still
completes exactly once."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Callable

import pytest
import requests

from tests.e2e.test_checkout_e2e import WAITING, card, client_for, make_stack

pytestmark = pytest.mark.e2e


def test_a_redis_restart_loses_nothing_and_answers_json_throughout(tmp_path):
    with make_stack(tmp_path) as stack:
        loses_nothing_through(stack, lambda: stack.restart_redis(down_seconds=1.5))


def loses_nothing_through(stack, outage: Callable[[], None]) -> None:
    """Eight checkouts wait for their OTPs; four are submitted (their steps in flight), then the
    ``outage``, then the other four (accepted, or a JSON 503 to try again). Meanwhile the merchant
    keeps reading: every answer JSON, never a 500. Then every checkout completes exactly once."""
    api = client_for(stack)
    ids = [api.create_checkout(amount=20000 + i, card=card(), merchant_order_reference=f"out-{uuid.uuid4().hex[:12]}")
           ["id"] for i in range(8)]
    for i in ids:
        assert api.wait(i, WAITING, timeout=60)["status"] == "AWAITING_OTP"
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:  # the merchant keeps calling while a dependency is away
        while not stop.is_set():
            for path in ("/v1/checkouts/" + ids[0], "/ready"):
                try:
                    answer = requests.get(stack.api_url + path, headers={"X-API-Key": api.session.headers["X-API-Key"]},
                                          timeout=5)
                    statuses.append(answer.status_code)
                    answer.json()
                except requests.RequestException:
                    statuses.append(-1)
            time.sleep(0.05)

    thread = threading.Thread(target=hammer)
    thread.start()
    for i in ids[:4]:  # steps in flight (unacknowledged) when the dependency goes away
        api.submit_otp(i, "123456")
    outage()
    answers = submit_through_outage(stack, api, ids[4:])  # sent right after it
    stop.set()
    thread.join()
    print("reads:", collections.Counter(statuses), "OTPs:", collections.Counter(answers))
    assert 500 not in statuses and 500 not in answers and -1 not in statuses
    completed_once(stack, api, ids)


def submit_through_outage(stack, api, ids: list[str]) -> list[int]:
    """Each checkout's OTP, sent until accepted: meanwhile every answer is a JSON 503 to try again.
    Returns the statuses seen."""
    answers = []
    for i in ids:
        for _ in range(40):
            answer = requests.post(f"{stack.api_url}/v1/checkouts/{i}/otp", json={"otp": "123456"},
                                   headers={"X-API-Key": api.session.headers["X-API-Key"]}, timeout=10)
            answers.append(answer.status_code)
            assert answer.headers["content-type"].startswith("application/json")
            if answer.status_code == 202:
                break
            assert answer.status_code == 503 and answer.json()["code"] == "UNAVAILABLE", answer.text
            time.sleep(0.25)
    return answers


def completed_once(stack, api, ids: list[str]) -> None:
    """Every checkout ends COMPLETED (the stack's processes restarted if they die), and Plural's
    ledger shows each order, payment and capture once."""
    restarts: dict[str, list[float]] = {}
    deadline = time.monotonic() + 120
    final = {}
    while time.monotonic() < deadline and len(final) < len(ids):
        assert stack.supervise(restarts) is None
        for i in ids:
            c = api.get_checkout(i)
            if c["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                final[i] = c
        time.sleep(0.5)
    print("restarted:", {k: len(v) for k, v in restarts.items()})
    assert {c["status"] for c in final.values()} == {"COMPLETED"} and len(final) == len(ids), {
        i: api.get_checkout(i)["state"] for i in ids}
    entries = requests.get(f"{stack.sandbox_url}/sandbox/ledger", timeout=5).json()["entries"]
    orders = {c["plural_order_id"] for c in final.values()}
    per_order = collections.Counter((e["order_id"], e["kind"]) for e in entries if e["order_id"] in orders)
    assert all(per_order[(o, k)] == 1 for o in orders for k in ("ORDER_CREATED", "PAYMENT_CREATED", "CAPTURED"))

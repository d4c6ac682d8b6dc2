"""A PostgreSQL crash in the middle of checkouts: pooled connections die with it (in use or idle),
every answer meanwhile is JSON (never a 500), and every checkout still completes exactly once."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from typing import Any, Iterator

import pytest
import requests

from tests.e2e.test_checkout_e2e import WAITING, card, client_for, make_stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def postgres_server() -> Iterator[Any]:
    from orchestrator.pg_server import NoPostgres, throwaway_postgres_server

    try:
        server = throwaway_postgres_server()
        running = server.__enter__()
    except NoPostgres as exc:
        pytest.skip(str(exc))
    try:
        yield running
    finally:
        server.__exit__(None, None, None)


def test_a_postgres_crash_loses_nothing_and_answers_json_throughout(tmp_path, postgres_server):
    with make_stack(tmp_path, DATABASE_URL=postgres_server.url) as stack:
        api = client_for(stack)
        key = {"X-API-Key": api.session.headers["X-API-Key"]}
        ids = [api.create_checkout(amount=30000 + i, card=card(), merchant_order_reference=f"pg-{uuid.uuid4().hex[:12]}")
               ["id"] for i in range(8)]
        for i in ids:
            assert api.wait(i, WAITING, timeout=60)["status"] == "AWAITING_OTP"
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:  # the merchant keeps reading while the database is away
            while not stop.is_set():
                try:
                    answer = requests.get(f"{stack.api_url}/v1/checkouts/{ids[0]}", headers=key, timeout=5)
                    statuses.append(answer.status_code)
                    answer.json()
                except requests.RequestException:
                    statuses.append(-1)
                time.sleep(0.05)

        thread = threading.Thread(target=hammer)
        thread.start()
        for i in ids[:4]:  # steps in flight when the server goes down
            api.submit_otp(i, "123456")
        postgres_server.restart()
        answers = []
        for i in ids[4:]:  # OTPs right after the crash: accepted, or a JSON 503 to try again
            for _ in range(40):
                answer = requests.post(f"{stack.api_url}/v1/checkouts/{i}/otp", json={"otp": "123456"},
                                       headers=key, timeout=10)
                answers.append(answer.status_code)
                assert answer.headers["content-type"].startswith("application/json")
                if answer.status_code == 202:
                    break
                assert answer.status_code == 503, (answer.status_code, answer.text)
                time.sleep(0.25)
        stop.set()
        thread.join()
        print("reads:", collections.Counter(statuses), "OTPs:", collections.Counter(answers))
        assert 500 not in statuses and 500 not in answers and -1 not in statuses
        restarts: dict[str, list[float]] = {}
        deadline = time.monotonic() + 120
        final: dict[str, Any] = {}
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

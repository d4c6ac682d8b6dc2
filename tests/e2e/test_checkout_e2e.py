"""End to end: a real Redis, a real Celery worker and beat, the API and the sandbox, as processes."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from devkit.demo import approve_on_bank_page
from devkit.merchant_client import OrchestratorClient, OrchestratorError
from devkit.redis_server import free_port
from devkit.stack import ROOT, Stack

pytestmark = pytest.mark.e2e

OTP_CARD, ACS_CARD, DECLINE_CARD = "4012001037141112", "5555555555554444", "4000000000000002"
WAITING = {"AWAITING_OTP", "AWAITING_REDIRECT", "FAILED", "CANCELLED", "COMPLETED"}
E2E_ENV = {
    "SWEEP_INTERVAL": "0.5",
    "POLL_SCHEDULE": "0.5,1",
    "STEP_LEASE_SECONDS": "4",
    "CUSTOMER_ACTION_TIMEOUT": "120",
    "SANDBOX_OTP_RESEND_AFTER": "2",
    "BROKER_VISIBILITY_TIMEOUT": "10",
    "RETRY_BACKOFF_BASE": "0.5",
    "RETRY_BACKOFF_CAP": "2",
    "WORKER_CONCURRENCY": "16",
    # a killed worker's claims lapse within 2 s; a short call budget (the run lease: about 25 s)
    "CLAIM_LEASE_SECONDS": "2",
    "HTTP_CONNECT_TIMEOUT": "1",
    "HTTP_READ_TIMEOUT": "2",
    "HTTP_MAX_ATTEMPTS": "2",
    "HTTP_BACKOFF_CAP": "0.2",
    "LOG_FORMAT": "json",
}


def make_stack(base: Path, **env: str) -> Stack:
    return Stack(data_dir=base / "var", api_port=free_port(), sandbox_port=free_port(), redis_port=free_port(),
                 log_dir=base / "logs", env={**E2E_ENV, **env})


def client_for(stack: Stack) -> OrchestratorClient:
    from config import Settings

    return OrchestratorClient(stack.api_url, Settings().orchestrator_api_key.get_secret_value(), timeout=15)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with make_stack(tmp_path_factory.mktemp("e2e")) as s:
        yield s


@pytest.fixture(scope="module")
def api(stack: Stack) -> OrchestratorClient:
    return client_for(stack)


def card(number: str = OTP_CARD) -> dict[str, str]:
    return {"number": number, "name": "Kevin Bob", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}


def new(api: OrchestratorClient, number: str = OTP_CARD, **kw):
    c = api.create_checkout(amount=kw.pop("amount", 110000), card=card(number),
                            merchant_order_reference=kw.pop("reference", f"e2e-{uuid.uuid4().hex[:16]}"), **kw)
    return api.wait(c["id"], WAITING, timeout=30)


def ledger(stack: Stack, order_id: str) -> list[str]:
    entries = requests.get(f"{stack.sandbox_url}/sandbox/ledger", timeout=5).json()["entries"]
    return [e["kind"] for e in entries if e["order_id"] == order_id]


def test_otp_checkout_completes(api, stack):
    c = new(api)
    assert c["status"] == "AWAITING_OTP"
    api.submit_otp(c["id"], "123456")
    done = api.wait(c["id"], timeout=30)
    assert done["status"] == "COMPLETED" and done["captured_amount"]["value"] == 110000
    assert ledger(stack, done["plural_order_id"]) == ["ORDER_CREATED", "PAYMENT_CREATED", "AUTHORIZED", "CAPTURED"]


def test_wrong_otp_then_right(api):
    c = new(api)
    api.submit_otp(c["id"], "000000")
    again = api.wait(c["id"], {"AWAITING_OTP"}, timeout=30)
    for _ in range(100):
        if again["error"]:
            break
        time.sleep(0.1)
        again = api.get_checkout(c["id"])
    assert again["error"]["code"] == "INVALID_OTP" and again["next_action"]["attempts_left"] == 2
    api.submit_otp(c["id"], "123456")
    assert api.wait(c["id"], timeout=30)["status"] == "COMPLETED"


def test_too_many_wrong_otps_fail(api):
    c = new(api)
    for _ in range(3):
        api.wait(c["id"], {"AWAITING_OTP", "FAILED"}, timeout=30)
        try:
            api.submit_otp(c["id"], "000000")
        except OrchestratorError as exc:
            assert exc.code == "INVALID_STATE"
            time.sleep(0.2)
            api.submit_otp(c["id"], "000000")
        time.sleep(0.3)
    done = api.wait(c["id"], {"FAILED"}, timeout=30)
    assert done["error"]["code"] == "USER_AUTHENTICATION_FAILED"


def test_resend_too_early_is_refused_then_accepted(api):
    c = new(api)
    with pytest.raises(OrchestratorError) as exc:
        api.resend_otp(c["id"])
    assert exc.value.status == 409 and exc.value.code == "RESEND_TOO_EARLY" and exc.value.body["retry_after"] >= 1
    time.sleep(exc.value.body["retry_after"] + 0.2)
    api.resend_otp(c["id"])
    api.submit_otp(c["id"], "123456")
    assert api.wait(c["id"], timeout=30)["status"] == "COMPLETED"


@pytest.mark.parametrize("approve,final", [(True, "COMPLETED"), (False, "FAILED")])
def test_redirect_approved_or_declined(api, approve, final):
    c = new(api, ACS_CARD)
    assert c["status"] == "AWAITING_REDIRECT" and c["next_action"]["type"] == "REDIRECT"
    approve_on_bank_page(c["next_action"]["url"], approve)
    assert api.wait(c["id"], timeout=30)["status"] == final


def test_decline_at_payment(api):
    c = new(api, DECLINE_CARD)
    assert c["status"] == "FAILED" and c["error"]["code"] == "PAYMENT_DECLINED"


def test_abandoned_customer_is_cancelled_at_the_deadline_and_watched_until_the_payment_expires(tmp_path):
    """Plural refuses to cancel an unpaid order: the checkout shows CANCELLED at the deadline and
    is watched until Plural expires the payment."""
    with make_stack(tmp_path, CUSTOMER_ACTION_TIMEOUT="4", SANDBOX_PAYMENT_EXPIRY_SECONDS="8") as stack:
        api = client_for(stack)
        c = new(api, ACS_CARD)
        assert c["status"] == "AWAITING_REDIRECT"
        done = api.wait(c["id"], {"CANCELLED", "COMPLETED", "FAILED"}, timeout=40)
        assert done["status"] == "CANCELLED" and done["state"] == "WATCHING"
        assert "deadline" in " ".join(h["reason"] for h in done["history"])
        deadline = time.monotonic() + 40
        while api.get_checkout(c["id"])["state"] != "CANCELLED":
            assert time.monotonic() < deadline, "the watched payment never ended"
            time.sleep(0.2)
        kinds = ledger(stack, done["plural_order_id"])
        assert "CANCELLED" not in kinds and "PAYMENT_FAILED" in kinds


def test_the_same_checkout_twice_is_one_checkout(api, stack):
    reference = f"e2e-{uuid.uuid4().hex[:16]}"
    first = api.create_checkout(amount=5000, card=card(), merchant_order_reference=reference)
    second = api.create_checkout(amount=5000, card=card(), merchant_order_reference=reference)
    assert first["id"] == second["id"]
    c = api.wait(first["id"], WAITING, timeout=30)
    assert ledger(stack, c["plural_order_id"]).count("ORDER_CREATED") == 1


def test_worker_killed_mid_batch_loses_nothing_and_charges_nothing_twice(api, stack):
    with cf.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: api.create_checkout(amount=10000 + i, card=card(),
                                                          merchant_order_reference=f"kill-{uuid.uuid4().hex[:12]}"
                                                          )["id"], range(24)))
    time.sleep(0.4)
    stack.kill("worker", signal.SIGKILL)
    time.sleep(1.0)
    stack.restart("worker")
    waiting = [api.wait(i, WAITING, timeout=90) for i in ids]
    odd = [(c["status"], c["error"], [h["reason"] for h in c["history"]]) for c in waiting
           if c["status"] != "AWAITING_OTP"]
    assert not odd
    for c in waiting:
        api.submit_otp(c["id"], "123456")
    time.sleep(0.3)
    stack.kill("worker", signal.SIGKILL)
    stack.restart("worker")
    final = [api.wait(i, timeout=90) for i in ids]
    odd = [(c["status"], c["error"], [h["reason"] for h in c["history"]]) for c in final if c["status"] != "COMPLETED"]
    assert not odd
    entries = requests.get(f"{stack.sandbox_url}/sandbox/ledger", timeout=5).json()["entries"]
    orders = {c["plural_order_id"] for c in final}
    assert len(orders) == len(ids)
    per_order = collections.Counter((e["order_id"], e["kind"]) for e in entries if e["order_id"] in orders)
    for order_id in orders:
        for kind in ("ORDER_CREATED", "PAYMENT_CREATED", "AUTHORIZED", "CAPTURED"):
            assert per_order[(order_id, kind)] == 1, (order_id, kind)
    by_reference = collections.Counter(e["merchant_order_reference"] for e in entries if e["kind"] == "ORDER_CREATED")
    assert all(by_reference[c["merchant_order_reference"]] == 1 for c in final)


def test_no_card_number_or_cvv_in_any_log_or_the_database(stack):
    logs = b"".join(p.read_bytes() for p in Path(stack.log_dir).glob("*.log"))
    assert logs, "the processes wrote no logs"
    for number in (OTP_CARD, ACS_CARD, DECLINE_CARD):
        assert number.encode() not in logs
    assert b'"cvv"' not in logs
    db = b"".join(p.read_bytes() for p in Path(stack.data_dir).glob("orchestrator.store*"))
    assert OTP_CARD.encode() not in db and ACS_CARD.encode() not in db


def start_up(tmp_path: Path, ports: dict[str, int]) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """``./run.sh up`` (``python -m devkit up``) as a user runs it; its output is read into a list as it comes."""
    import threading

    env = {**os.environ, "DATA_DIR": str(tmp_path / "var"), **E2E_ENV, "LOG_FORMAT": "console"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "devkit", "up", "--api-port", str(ports["api"]),
                             "--sandbox-port", str(ports["sandbox"]), "--redis-port", str(ports["redis"])],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    lines: list[bytes] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True).start()
    deadline = time.time() + 60
    while not any(b"Ctrl-C" in line for line in lines) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    return proc, lines


def test_up_runs_the_whole_stack_labels_each_line_and_stops_on_ctrl_c(tmp_path):
    ports = {"api": free_port(), "sandbox": free_port(), "redis": free_port()}
    proc, lines = start_up(tmp_path, ports)
    try:
        banner = b"".join(lines)
        assert b"(embedded)" in banner and f"127.0.0.1:{ports['api']}".encode() in banner
        from config import Settings

        api = OrchestratorClient(f"http://127.0.0.1:{ports['api']}", Settings().orchestrator_api_key.get_secret_value())
        c = new(api)
        api.submit_otp(c["id"], "123456")
        assert api.wait(c["id"], timeout=30)["status"] == "COMPLETED"
        labels = {line.split(b"|", 1)[0].strip() for line in lines if b"|" in line[:10]}
        assert {b"api", b"worker"} <= labels, labels
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 0
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{ports['api']}/health", timeout=1)


def test_closing_ups_terminal_stops_everything_cleanly(tmp_path):
    from devkit.redis_server import port_in_use

    ports = {"api": free_port(), "sandbox": free_port(), "redis": free_port()}
    proc, lines = start_up(tmp_path, ports)
    assert any(b"Ctrl-C" in line for line in lines)
    os.kill(proc.pid, signal.SIGHUP)  # what a closed terminal sends
    assert proc.wait(30) == 0
    assert not [name for name, p in ports.items() if port_in_use(p)]


def test_up_killed_outright_takes_its_children_with_it_and_a_second_up_names_a_busy_port(tmp_path):
    from devkit.redis_server import port_in_use

    ports = {"api": free_port(), "sandbox": free_port(), "redis": free_port()}
    proc, _lines = start_up(tmp_path, ports)
    requests.get(f"http://127.0.0.1:{ports['api']}/health", timeout=5).raise_for_status()
    holder = __import__("socket").socket()
    try:
        os.kill(proc.pid, signal.SIGKILL)  # only `up` itself: its children must not outlive it
        proc.wait(10)
        deadline = time.time() + 30
        while any(port_in_use(p) for p in ports.values()) and time.time() < deadline:
            time.sleep(0.2)
        assert not [name for name, p in ports.items() if port_in_use(p)]
        holder.bind(("127.0.0.1", ports["api"]))
        holder.listen()
        second = subprocess.run([sys.executable, "-m", "devkit", "up", "--api-port", str(ports["api"]),
                                 "--sandbox-port", str(ports["sandbox"]), "--redis-port", str(ports["redis"])],
                                env={**os.environ, "DATA_DIR": str(tmp_path / "var2")}, cwd=ROOT, capture_output=True,
                                timeout=30)
        assert second.returncode != 0
        assert b"--api-port" in second.stderr and str(ports["api"]).encode() in second.stderr
        assert b"listening" not in second.stdout and b"Ctrl-C" not in second.stdout
    finally:
        holder.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_webhook_lost_entirely_is_settled_by_polling(api, stack):
    requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"webhooks": {"drop": 1.0}}, timeout=5)
    try:
        c = new(api, ACS_CARD)
        approve_on_bank_page(c["next_action"]["url"])
        done = api.wait(c["id"], timeout=30)
    finally:
        requests.delete(f"{stack.sandbox_url}/sandbox/faults", timeout=5)
    assert done["status"] == "COMPLETED"
    assert [h for h in done["history"] if h["to"] == "COMPLETED"][0]["reason"].startswith("polled")


def test_the_demo_drives_every_kind_to_a_final_status(api, stack, capsys):
    from config import Settings
    from devkit.demo import KINDS, run_demo

    assert run_demo(stack.api_url, Settings().orchestrator_api_key.get_secret_value(), len(KINDS), timeout=90) == 0
    table = capsys.readouterr().out
    for kind, _ in KINDS:
        assert kind in table
    assert "ERROR" not in table and "COMPLETED" in table and "CANCELLED" in table
    # the metrics, scraped after it, show the demo's counts, the workers' included (multiprocess)
    scraped = requests.get(f"{stack.api_url}/metrics", timeout=10).text
    created = sum(float(line.rsplit(" ", 1)[1]) for line in scraped.splitlines()
                  if line.startswith("orchestrator_checkouts_created_total{"))
    assert created >= len(KINDS)
    assert 'orchestrator_gateway_calls_total{endpoint="POST /api/pay/v1/orders",outcome="ok"}' in scraped
    assert 'orchestrator_step_seconds_count{step="create_order"}' in scraped
    assert 'status="COMPLETED"' in scraped and 'status="CANCELLED"' in scraped


def test_a_pre_auth_authorization_after_the_deadline_is_released(tmp_path):
    with make_stack(tmp_path, CUSTOMER_ACTION_TIMEOUT="3") as stack:
        api = client_for(stack)
        # the first cancel stalls for two seconds: the customer approves meanwhile
        requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"rules": [
            {"kind": "hang_before", "path": "/cancel$", "seconds": 2, "count": 1}]}, timeout=5)
        c = new(api, ACS_CARD, pre_auth=True)
        api.wait(c["id"], {"CANCELLING"}, timeout=30, interval=0.05)
        approve_on_bank_page(c["next_action"]["url"])
        done = api.wait(c["id"], {"CANCELLED", "AUTHORIZED", "COMPLETED", "FAILED"}, timeout=40)
        assert done["status"] == "CANCELLED" and done["finished_late"] is True
        kinds = ledger(stack, done["plural_order_id"])
        assert kinds.index("AUTHORIZED") < kinds.index("CANCELLED")


def test_readiness_reports_database_redis_the_token_the_broker_and_the_outbox(api, stack):
    new(api)  # a token fetched, an event written
    answer = requests.get(f"{stack.api_url}/ready", timeout=5)
    assert answer.status_code == 200
    checks = answer.json()["checks"]
    assert checks["database"] == "ok" and checks["redis"] == "ok" and checks["token"] == "ok"
    assert set(checks["broker"]) == {"saga", "events"}
    assert checks["outbox"]["pending"] >= 1 and checks["outbox"]["failed"] == 0


def test_a_worker_killed_mid_call_frees_its_checkout_within_a_claim_lease(tmp_path):
    """Here a step's worst case (the run lease) is six minutes, the claim lease two seconds: the
    killed worker stops renewing its claims, and its checkout is driven again within seconds."""
    with make_stack(tmp_path, HTTP_READ_TIMEOUT="60", CLAIM_LEASE_SECONDS="2") as stack:
        api = client_for(stack)
        requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"rules": [
            {"kind": "latency", "method": "POST", "path": "^/api/pay/v1/orders$", "seconds": 5}]},
            timeout=5).raise_for_status()
        c = api.create_checkout(amount=10000, card=card(), merchant_order_reference=f"lease-{uuid.uuid4().hex[:12]}")
        time.sleep(2)  # the worker's run has claimed the checkout and is waiting on Create Order
        stack.kill("worker", signal.SIGKILL)
        requests.delete(f"{stack.sandbox_url}/sandbox/faults", timeout=5).raise_for_status()
        stack.restart("worker")
        waited = api.wait(c["id"], WAITING, timeout=45)
        assert waited["status"] == "AWAITING_OTP", [h["reason"] for h in waited["history"]]
        api.submit_otp(c["id"], "123456")
        done = api.wait(c["id"], timeout=30)
        assert done["status"] == "COMPLETED"
        assert ledger(stack, done["plural_order_id"]) == ["ORDER_CREATED", "PAYMENT_CREATED", "AUTHORIZED", "CAPTURED"]

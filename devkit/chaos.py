"""``python -m devkit chaos``: the real processes under faults, then the invariants.

It starts the whole system as processes (embedded Redis with AOF, two workers, beat, the API and
the strict sandbox), drives mixed checkouts through the merchant API as shops and customers would
(native OTP, bank page approved and declined, declined cards, pre-auth delivered in full or in
part, cancels, refunds), and meanwhile SIGKILLs workers, restarts beat and Redis (every third
fault at least), turns sandbox faults on (5xx, 429, answers that come too late) and drops,
duplicates and reorders webhooks. Then it lets the system settle with the faults off and checks:

- final or waiting: every checkout is final, or rests where it legitimately may (an undelivered
  hold); anything else is ``stuck``;
- it agrees with Get Order at Plural (the sandbox), else a ``mismatch``;
- the sandbox's ledger shows no order, payment, authorization, capture or refund made twice
  (``double``), captured ≤ authorized, refunded ≤ captured;
- no worker exited of its own accord (``worker_exits``: a Redis restart must not end one; the
  workers chaos SIGKILLs are not counted);
- a checkout whose customer walked away ended ``FAILED`` with ``PAYMENT_EXPIRED`` or was
  cancelled by our deadline, else a ``mismatch``;
- no checkout FAILED because Plural refused our client credentials for a while (a rotated
  secret, then fixed: ``refuse_credentials``), a configuration fault (``credentials_failed``).

It prints ``checkouts, faults, redis_restarts, final, stuck, mismatches, double, worker_exits``
``credentials_failed``, and what the new faults did (``lost_answers`` and the sandbox's ``duplicates_refused``,
``outages`` and ``late_webhooks``, ``left_to_expire`` with how they ended), and exits non-zero
unless stuck, mismatches, double, worker_exits and credentials_failed are 0.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import random
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import requests

from devkit.demo import (ACS_CARD, CARD, CREDIT_EMI_OTP_CARD, DEBIT_EMI_CARD, DECLINE_CARD, OTP_CARD,
                                approve_on_bank_page)
from devkit.merchant_client import OrchestratorClient, OrchestratorError
from devkit.redis_server import free_port
from devkit.audit import agrees_with_plural, ledger_problems
from devkit.stack import Stack

#: timings short enough for a run of minutes, the same shape as production's
CHAOS_ENV = {
    "SWEEP_INTERVAL": "0.5", "POLL_SCHEDULE": "0.5,1,2", "STEP_LEASE_SECONDS": "4", "CUSTOMER_ACTION_TIMEOUT": "90",
    "SANDBOX_OTP_RESEND_AFTER": "2", "BROKER_VISIBILITY_TIMEOUT": "10", "RETRY_BACKOFF_BASE": "0.5",
    "RETRY_BACKOFF_CAP": "2", "WORKER_CONCURRENCY": "16", "LOG_FORMAT": "json", "HTTP_CONNECT_TIMEOUT": "1",
    "HTTP_READ_TIMEOUT": "2", "HTTP_MAX_ATTEMPTS": "2", "HTTP_BACKOFF_CAP": "0.2", "STEP_MAX_ATTEMPTS": "30",
    "SANDBOX_PAYMENT_EXPIRY_SECONDS": "60", "CLAIM_LEASE_SECONDS": "3",
    # Plural's eight retries over a day, compressed 600 times, each signed with the event's time
    "SANDBOX_WEBHOOK_SCHEDULE": "plural", "SANDBOX_WEBHOOK_TIMESTAMPS": "original",
    "SANDBOX_WEBHOOK_TIME_SCALE": str(1 / 600), "SANDBOX_DUPLICATES": "refuse",
}
FINAL = {"COMPLETED", "CANCELLED", "FAILED", "EXPIRED"}
KINDS = ("otp", "otp_wrong_first", "pre_auth_full", "pre_auth_partial", "acs_approve", "acs_decline", "decline",
         "cancel", "refund", "debit_emi", "pre_auth_credit_emi", "abandon_otp", "abandon_bank_page")
#: the faults every run starts with, so that even a short run has each of them
FIRST_FAULTS = ("duplicates", "late_webhooks", "refuse_credentials")
#: customers who never finish: their payment is left to expire
ABANDONED = frozenset({"abandon_otp", "abandon_bank_page"})


@dataclass
class Report:
    checkouts: int = 0
    faults: int = 0
    final: int = 0
    stuck: int = 0
    mismatches: int = 0
    double: int = 0
    redis_restarts: int = 0
    worker_exits: int = 0
    #: answers Plural (the sandbox) acted on and then lost, and its DUPLICATE_REQUEST answers
    lost_answers: int = 0
    duplicates_refused: int = 0
    #: webhook outages, and deliveries that came signed more than 300 s before they were sent
    outages: int = 0
    late_webhooks: int = 0
    #: checkouts whose customer walked away, and how they ended
    left_to_expire: int = 0
    expired: int = 0  # FAILED with PAYMENT_EXPIRED
    expiry_cancelled: int = 0  # cancelled by our deadline first
    injected: dict[str, int] = field(default_factory=dict)  # the faults, by kind
    credential_refusals: int = 0
    credentials_failed: int = 0
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"checkouts={self.checkouts} faults={self.faults} redis_restarts={self.redis_restarts} "
                f"credential_refusals={self.credential_refusals} "
                f"final={self.final} stuck={self.stuck} mismatches={self.mismatches} double={self.double} "
                f"worker_exits={self.worker_exits} lost_answers={self.lost_answers} "
                f"duplicates_refused={self.duplicates_refused} outages={self.outages} "
                f"late_webhooks={self.late_webhooks} left_to_expire={self.left_to_expire} "
                f"expired={self.expired} expiry_cancelled={self.expiry_cancelled} "
                f"credentials_failed={self.credentials_failed}")

    @property
    def ok(self) -> bool:
        return (self.stuck == 0 and self.mismatches == 0 and self.double == 0 and self.worker_exits == 0
                and self.credentials_failed == 0)


# --- fault: Plural refuses our client credentials for a while, then they are fixed ---------

#: a step waiting for accepted credentials tries again this often (production: 15 s)
CHAOS_ENV["CREDENTIALS_RETRY_SECONDS"] = "1"
#: what a checkout failed by a token refusal would carry: our code, or Plural's token error's
CREDENTIAL_CODES = frozenset({"CREDENTIALS_REJECTED", "UNAUTHORIZED"})


def refuse_credentials(sandbox_url: str, rng: random.Random) -> float:
    """A rotated secret: Plural voids every token and refuses the client credentials (422) for a
    few seconds, then accepts them again by itself (the secret fixed). Returns the seconds."""
    seconds = round(rng.uniform(2.0, 10.0), 1)
    requests.post(f"{sandbox_url}/sandbox/tokens/refuse", json={"seconds": seconds}, headers=_admin(),
                  timeout=5).raise_for_status()
    return seconds


def failed_by_credentials(view: dict[str, Any]) -> bool:
    """Did this checkout FAIL because the token call was refused?"""
    error = view.get("error") or {}
    return view["status"] == "FAILED" and error.get("code") in CREDENTIAL_CODES


def _shop(api: OrchestratorClient, kind: str, rng: random.Random) -> str:
    """One shop and its customer, doing what ``kind`` says; returns the checkout id."""
    number = {"acs_approve": ACS_CARD, "acs_decline": ACS_CARD, "decline": DECLINE_CARD,
              "abandon_bank_page": ACS_CARD}.get(kind, OTP_CARD)
    pre_auth = kind.startswith("pre_auth")
    if kind == "debit_emi":  # HDFC DC, 6 months: the bank page
        c = api.create_checkout(amount=rng.randint(300000, 5000000), card=DEBIT_EMI_CARD, payment_method="DEBIT_EMI",
                                emi={"issuer_id": "7", "tenure_id": "2"})
    elif kind == "pre_auth_credit_emi":  # HDFC CC, 3 months, native OTP; the card pays 50,000 less
        c = api.create_checkout(amount=rng.randint(1500000, 5000000), card={**CARD, "number": CREDIT_EMI_OTP_CARD},
                                payment_method="CREDIT_EMI", pre_auth=True, emi={"issuer_id": "6", "tenure_id": "1"})
    else:
        c = api.create_checkout(amount=rng.randint(1000, 500000), card={**CARD, "number": number}, pre_auth=pre_auth)
    waiting = {"AWAITING_OTP", "AWAITING_REDIRECT"} | FINAL
    try:
        c = api.wait(c["id"], waiting, timeout=120, interval=0.3)
        if kind == "cancel":
            api.cancel(c["id"])
            return c["id"]
        if kind in ABANDONED:  # the customer never enters the OTP nor opens the bank page
            return c["id"]
        if c["status"] == "AWAITING_REDIRECT":
            approve_on_bank_page(c["next_action"]["url"], kind != "acs_decline")
            return c["id"]
        if c["status"] != "AWAITING_OTP":
            return c["id"]
        if kind == "otp_wrong_first":
            api.submit_otp(c["id"], "000000")
            api.wait(c["id"], {"AWAITING_OTP"} | FINAL, timeout=120, interval=0.3)
        api.submit_otp(c["id"], "123456")
        c = api.wait(c["id"], {"AUTHORIZED"} | FINAL, timeout=120, interval=0.3)
        if pre_auth and c["status"] == "AUTHORIZED":
            part = c["authorized_amount"]["value"] // 2 if kind == "pre_auth_partial" else None
            api.deliver(c["id"], part)
        if kind == "refund" and c["status"] == "COMPLETED":
            api.refund(c["id"], max(1, c["captured_amount"]["value"] // 3))
    except (OrchestratorError, TimeoutError, requests.RequestException):
        pass  # the checkout is judged at the end, whatever the shop saw on the way
    return c["id"]


class Chaos:
    def __init__(self, stack: Stack, rng: random.Random, period: float):
        self.stack, self.rng, self.period = stack, rng, period
        self.count = 0
        self.stop = threading.Event()
        self.restarts: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.redis_restarts = 0
        self.credential_refusals = 0
        self.killed: set[int] = set()  # the pids of the workers chaos SIGKILLed
        self.exits: list[str] = []  # workers that exited of their own accord
        self.injected: collections.Counter[str] = collections.Counter()  # faults by kind

    def supervise(self) -> None:
        with self.lock:
            for name, proc in self.stack.processes.items():
                if (self.stack.commands.get(name, (name, None))[0] == "worker" and proc.poll() is not None
                        and proc.pid not in self.killed):
                    self.killed.add(proc.pid)  # counted once; the supervisor starts another
                    self.exits.append(f"{name} (pid {proc.pid}) exited with {proc.returncode}")
            why = self.stack.supervise(self.restarts, budget=100)
            if why:
                raise RuntimeError(why)

    def one(self) -> None:
        stack, rng = self.stack, self.rng
        what = rng.choice(["kill_worker", "kill_worker", "restart_beat", "restart_redis", "faults", "faults",
                           "webhooks", "duplicates", "late_webhooks", "refuse_credentials"])
        if self.count < len(FIRST_FAULTS):  # every run has each of them at least once
            what = FIRST_FAULTS[self.count]
        elif self.count % 3 == 2:
            what = "restart_redis"
        with self.lock:
            if what == "kill_worker":
                name = rng.choice(["worker", "worker2"])
                self.killed.add(stack.processes[name].pid)
                stack.kill(name, signal.SIGKILL)
            elif what == "restart_beat":
                stack.restart("beat")
            elif what == "restart_redis":
                stack.restart_redis(down_seconds=rng.uniform(0.2, 1.5))
                self.redis_restarts += 1
            elif what == "refuse_credentials":
                refuse_credentials(stack.sandbox_url, rng)
                self.credential_refusals += 1
            elif what == "faults":
                rules = [{"kind": "error", "path": "^/api/(pay|affordability)", "statuses": [500, 503, 429],
                          "probability": 0.1},
                         {"kind": "hang_after", "path": "^/api/(pay|affordability)", "seconds": 3.0,
                          "probability": 0.03}]
                requests.put(f"{stack.sandbox_url}/sandbox/faults", json={"rules": rules},
                             headers=_admin(), timeout=5)
            elif what == "duplicates":
                lose_answers(stack.sandbox_url)
            elif what == "late_webhooks":
                webhook_outage(stack.sandbox_url, rng)
            else:
                requests.put(f"{stack.sandbox_url}/sandbox/faults", headers=_admin(), timeout=5, json={
                    "rules": [], "webhooks": {"drop": 0.3, "duplicate": 0.3, "reorder": 0.3, "reorder_delay": 1.0}})
        self.injected[what] += 1
        self.count += 1

    def run(self) -> None:
        while not self.stop.wait(self.period * self.rng.uniform(0.5, 1.5)):
            try:
                self.one()
                self.supervise()
            except Exception as exc:  # a chaos step that failed is reported, and chaos goes on
                print(f"chaos step failed: {type(exc).__name__}: {exc}", flush=True)


#: the calls that carry a merchant reference Plural de-duplicates on: create order, create
#: payment, capture, refund
REFERENCED_CALLS = r"^/api/pay/v1/(orders|orders/[^/]+/(payments|capture)|refunds/[^/]+)$"


def lose_answers(sandbox_url: str, probability: float = 0.25) -> None:
    """Duplicates of our own references: a share of the referenced calls succeed at Plural, but
    their answer is lost (a 5xx comes back instead), so our retry meets 422 DUPLICATE_REQUEST for
    what it already made and must find it by look-up."""
    rules = [{"kind": "drop_answer", "path": REFERENCED_CALLS, "statuses": [502, 503, 504],
              "probability": probability}]
    requests.put(f"{sandbox_url}/sandbox/faults", json={"rules": rules}, headers=_admin(), timeout=5)


def webhook_outage(sandbox_url: str, rng: random.Random) -> None:
    """Late webhook retries with original timestamps: every delivery fails for a few seconds, then
    the events come on Plural's compressed schedule, signed with the event's time moved back by
    the hours the schedule stands for (the fourth attempt on looks 305 s old or more: outside
    the receiver's 300 s tolerance, so it is applied through Get Order). The outage runs its course
    even if the next fault replaces this one."""
    requests.put(f"{sandbox_url}/sandbox/faults", json={"rules": [], "webhooks": {"outage": rng.uniform(4.0, 8.0)}},
                 headers=_admin(), timeout=5)


def expiry_outcome(view: dict[str, Any]) -> str | None:
    """How a checkout left to expire ended: ``expired`` (FAILED, PAYMENT_EXPIRED), ``cancelled``
    (our deadline came first), or None when it ended any other way (a mismatch)."""
    if view["status"] == "FAILED" and (view.get("error") or {}).get("code") == "PAYMENT_EXPIRED":
        return "expired"
    if view["status"] == "CANCELLED" and not view.get("finished_late"):
        return "cancelled"
    return None


def _admin() -> dict[str, str]:
    from config import load_settings

    return {"X-Sandbox-Key": load_settings().sandbox_admin_key.get_secret_value()}


def run_chaos(checkouts: int = 200, *, seed: int = 1, chaos_period: float = 3.0, settle_seconds: float = 240.0,
              base: Path | None = None, progress: Callable[[str], None] = print,
              env: dict[str, str] | None = None) -> Report:
    rng = random.Random(seed)
    base = Path(base or tempfile.mkdtemp(prefix="orchestrator-chaos-"))
    stack = Stack(data_dir=base / "var", api_port=free_port(), sandbox_port=free_port(), redis_port=free_port(),
                  log_dir=base / "logs", env={**CHAOS_ENV, **(env or {})})
    report = Report(checkouts=checkouts)
    with stack:
        stack.spawn("worker2", command="worker")
        from config import load_settings

        key = load_settings().orchestrator_api_key.get_secret_value()
        api = OrchestratorClient(stack.api_url, key, timeout=15, retries=8)
        chaos = Chaos(stack, rng, chaos_period)
        chaotic = threading.Thread(target=chaos.run, daemon=True)
        chaotic.start()
        progress(f"chaos: {checkouts} checkouts, logs in {base / 'logs'}")
        kinds = [KINDS[i % len(KINDS)] for i in range(checkouts)]
        rng.shuffle(kinds)
        abandoned: set[str] = set()
        with cf.ThreadPoolExecutor(16) as pool:
            futures = {pool.submit(_shop, api, kind, random.Random(rng.random())): kind for kind in kinds}
            ids = []
            for future in cf.as_completed(futures):
                try:
                    ids.append(future.result())
                except Exception as exc:  # the shop could not even create its checkout
                    report.details.append(f"shop failed: {type(exc).__name__}: {exc}")
                    continue
                if futures[future] in ABANDONED:
                    abandoned.add(ids[-1])
        chaos.stop.set()
        chaotic.join()
        report.faults, report.redis_restarts = chaos.count, chaos.redis_restarts
        report.outages, report.injected = chaos.injected["late_webhooks"], dict(chaos.injected)
        report.credential_refusals = chaos.credential_refusals
        requests.delete(f"{stack.sandbox_url}/sandbox/faults", headers=_admin(), timeout=5)
        requests.delete(f"{stack.sandbox_url}/sandbox/tokens/refuse", headers=_admin(), timeout=5)
        progress(f"chaos: {chaos.count} faults injected; settling")
        deadline = time.monotonic() + settle_seconds
        views: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            chaos.supervise()
            views = {i: api.get_checkout(i) for i in ids}
            if all(v["status"] in FINAL | {"AUTHORIZED"} and v["state"] != "WATCHING" and
                   all(r["status"] in ("PROCESSED", "FAILED") for r in v.get("refunds") or [])
                   for v in views.values()):
                break
            time.sleep(1.0)
        chaos.supervise()
        report.worker_exits = len(chaos.exits)
        report.details += [f"worker exit: {e}" for e in chaos.exits]
        from orchestrator.plural import PluralClient

        settings = load_settings(plural_api_base=stack.sandbox_url, plural_token_url=None)
        plural = PluralClient.from_settings(settings)
        health = requests.get(f"{stack.sandbox_url}/sandbox/health", timeout=10).json()
        fired = requests.get(f"{stack.sandbox_url}/sandbox/faults", headers=_admin(), timeout=10).json()["fired"]
        report.lost_answers = fired.get("drop_answer", 0)
        report.duplicates_refused, report.late_webhooks = health["duplicates_refused"], health["webhooks_late"]
        report.left_to_expire = len(abandoned)
        entries = requests.get(f"{stack.sandbox_url}/sandbox/ledger", timeout=10).json()["entries"]
        orders = {v["plural_order_id"] for v in views.values() if v.get("plural_order_id")}
        doubles = ledger_problems([e for e in entries if e["order_id"] in orders])
        report.double = len(doubles)
        report.details += doubles
        for checkout_id, v in views.items():
            resting = v["status"] in FINAL or (v["status"] == "AUTHORIZED")
            if v["status"] in FINAL:
                report.final += 1
            if failed_by_credentials(v):
                report.credentials_failed += 1
                report.details.append(f"failed by a credentials refusal {checkout_id} {v.get('error')}")
            if not resting or v["state"] == "WATCHING":
                report.stuck += 1
                report.details.append(f"stuck {checkout_id} {v['state']} {v.get('error')} {v.get('attention')}")
                continue
            if checkout_id in abandoned:
                outcome = expiry_outcome(v)
                report.expired += outcome == "expired"
                report.expiry_cancelled += outcome == "cancelled"
                if outcome is None:
                    report.mismatches += 1
                    report.details.append(f"mismatch {checkout_id} left to expire, ended {v['status']} {v.get('error')}")
                    continue
            if not v.get("plural_order_id"):
                continue
            order = plural.get_order(v["plural_order_id"]).model_dump(mode="json", exclude_none=True)
            if not agrees_with_plural(v, order):
                report.mismatches += 1
                report.details.append(f"mismatch {checkout_id} {v['status']} vs Plural {order['status']}")
    return report


def main(checkouts: int, seed: int, period: float) -> int:
    report = run_chaos(checkouts, seed=seed, chaos_period=period)
    for line in report.details[:50]:
        print("  " + line)
    print("faults by kind: " + ", ".join(f"{k}={n}" for k, n in sorted(report.injected.items())))
    print(report.line())
    return 0 if report.ok else 1

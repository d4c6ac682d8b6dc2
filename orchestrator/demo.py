"""``orchestrator demo``: drive checkouts of every kind through a running stack and summarise them."""

from __future__ import annotations

import concurrent.futures as cf
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from statistics import median
from typing import Callable
from urllib.parse import parse_qs, urlparse

import requests
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from orchestrator.merchant_client import OrchestratorClient

CARD = {"name": "Demo Customer", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}
OTP_CARD, ACS_CARD, DECLINE_CARD = "4012001037141112", "5555555555554444", "4000000000000002"


@dataclass
class Outcome:
    kind: str
    status: str
    seconds: float
    error: str | None = None


def approve_on_bank_page(challenge_url: str, approve: bool = True) -> None:
    """Press Approve (or Decline) on the sandbox's bank page, as a customer's browser would."""
    page = urlparse(challenge_url)
    token = parse_qs(page.query)["token"][0]
    action = "approve" if approve else "decline"
    requests.post(f"{page.scheme}://{page.netloc}{page.path}/{action}", data={"token": token},
                  allow_redirects=False, timeout=10)


def _otp(api: OrchestratorClient, card: str, pre_auth: bool = False, wrong_first: bool = False) -> str:
    c = api.create_checkout(amount=110000, card={**CARD, "number": card}, pre_auth=pre_auth,
                            merchant_order_reference=f"demo-{uuid.uuid4().hex[:16]}")
    c = api.wait(c["id"], {"AWAITING_OTP", "AWAITING_REDIRECT", "FAILED", "CANCELLED"})
    if c["status"] != "AWAITING_OTP":
        return c["status"]
    if wrong_first:
        api.submit_otp(c["id"], "000000")
        api.wait(c["id"], {"AWAITING_OTP", "FAILED"}, timeout=30)
    api.submit_otp(c["id"], "123456")
    return api.wait(c["id"])["status"]


def _redirect(api: OrchestratorClient, approve: bool) -> str:
    c = api.create_checkout(amount=250000, card={**CARD, "number": ACS_CARD})
    c = api.wait(c["id"], {"AWAITING_REDIRECT", "FAILED", "CANCELLED"})
    if c["status"] != "AWAITING_REDIRECT":
        return c["status"]
    approve_on_bank_page(c["next_action"]["url"], approve)
    return api.wait(c["id"])["status"]


def _decline(api: OrchestratorClient) -> str:
    c = api.create_checkout(amount=99900, card={**CARD, "number": DECLINE_CARD})
    return api.wait(c["id"])["status"]


def _cancel(api: OrchestratorClient) -> str:
    c = api.create_checkout(amount=50000, card={**CARD, "number": OTP_CARD})
    api.wait(c["id"], {"AWAITING_OTP", "AWAITING_REDIRECT", "FAILED"})
    api.cancel(c["id"])
    return api.wait(c["id"], {"CANCELLED", "COMPLETED", "FAILED"})["status"]


KINDS: list[tuple[str, Callable[[OrchestratorClient], str]]] = [
    ("otp", lambda api: _otp(api, OTP_CARD)),
    ("otp pre-auth", lambda api: _otp(api, OTP_CARD, pre_auth=True)),
    ("otp wrong then right", lambda api: _otp(api, OTP_CARD, wrong_first=True)),
    ("redirect approved", lambda api: _redirect(api, True)),
    ("redirect declined", lambda api: _redirect(api, False)),
    ("declined card", _decline),
    ("cancelled", _cancel),
]


def run_demo(api_url: str, api_key: str, checkouts: int, timeout: float = 120.0) -> int:
    console = Console()
    api = OrchestratorClient(api_url, api_key)
    outcomes: list[Outcome] = []

    def one(i: int) -> Outcome:
        kind, fn = KINDS[i % len(KINDS)]
        started = time.monotonic()
        try:
            return Outcome(kind, fn(api), time.monotonic() - started)
        except Exception as exc:  # a demo reports every failure instead of stopping
            return Outcome(kind, "ERROR", time.monotonic() - started, str(exc)[:120])

    with Progress(console=console) as progress, cf.ThreadPoolExecutor(max_workers=16) as pool:
        task = progress.add_task("checkouts", total=checkouts)
        futures = [pool.submit(one, i) for i in range(checkouts)]
        for future in cf.as_completed(futures, timeout=timeout):
            outcomes.append(future.result())
            progress.advance(task)

    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_kind[o.kind].append(o)
    table = Table(title=f"{len(outcomes)} checkouts")
    for column in ("kind", "count", "final statuses", "p50 s", "max s"):
        table.add_column(column)
    for kind, items in by_kind.items():
        statuses = ", ".join(f"{s} ×{n}" for s, n in Counter(o.status for o in items).most_common())
        times = [o.seconds for o in items]
        table.add_row(kind, str(len(items)), statuses, f"{median(times):.2f}", f"{max(times):.2f}")
    console.print(table)
    errors = [o for o in outcomes if o.status == "ERROR"]
    for o in errors[:5]:
        console.print(f"[red]{o.kind}: {o.error}[/red]")
    return 1 if errors else 0

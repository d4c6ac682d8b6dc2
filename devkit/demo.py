"""``python -m devkit demo``: drive checkouts of every kind through a running stack and summarise them."""

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

from devkit.merchant_client import OrchestratorClient

CARD = {"name": "Demo Customer", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}
OTP_CARD, ACS_CARD, DECLINE_CARD = "4012001037141112", "5555555555554444", "4000000000000002"


#: the sandbox's EMI test cards (README): Debit EMI needs the registered mobile number
DEBIT_EMI_CARD = {"number": "4690478199123123", "registered_mobile_number": "9876543210"}
CREDIT_EMI_OTP_CARD = "4690000046910000"   # HDFC CC, native OTP
CREDIT_EMI_PAGE_CARD = "4166440000000018"  # PNB CC, the bank page


@dataclass
class Outcome:
    kind: str
    status: str
    seconds: float
    error: str | None = None
    emi: dict | None = None  # the offer an EMI checkout ended with


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


def pick_offer(discovery: dict, issuer_name: str, months: int) -> tuple[dict, dict]:
    issuer = next(i for i in discovery["issuers"] if i["name"] == issuer_name)
    return issuer, next(t for t in issuer["tenures"] if t["tenure_value"] == months)


def _emi(api: OrchestratorClient, method: str, card: dict, issuer_name: str, months: int, amount: int, *,
         approve: bool = True, pre_auth: bool = False, **terms: object) -> tuple[str, dict | None]:
    """Discover as a shop's checkout page would, show the customer a tenure, and pay with it."""
    found = api.discover_offers(amount=amount, card_number=card["number"] if method == "DEBIT_EMI" else None, **terms)
    issuer, tenure = pick_offer(found, issuer_name, months)
    c = api.create_checkout(amount=amount, card=card, payment_method=method, pre_auth=pre_auth,
                            merchant_order_reference=f"demo-emi-{uuid.uuid4().hex[:12]}",
                            emi={"issuer_id": issuer["id"], "tenure_id": tenure["tenure_id"],
                                 "expected_monthly_emi": tenure["monthly_emi_amount"]}, **terms)
    c = api.wait(c["id"], {"AWAITING_OTP", "AWAITING_REDIRECT", "FAILED", "CANCELLED"})
    if c["status"] == "AWAITING_OTP":
        api.submit_otp(c["id"], "123456")
    elif c["status"] == "AWAITING_REDIRECT":
        approve_on_bank_page(c["next_action"]["url"], approve)
    c = api.wait(c["id"], {"AUTHORIZED", "COMPLETED", "FAILED", "CANCELLED"} if pre_auth else
                 {"COMPLETED", "FAILED", "CANCELLED"})
    if pre_auth and c["status"] == "AUTHORIZED":
        api.deliver(c["id"])
        c = api.wait(c["id"])
    return c["status"], (c["emi"] or {}).get("offer")


KINDS: list[tuple[str, Callable[[OrchestratorClient], str | tuple[str, dict | None]]]] = [
    ("otp", lambda api: _otp(api, OTP_CARD)),
    ("otp pre-auth", lambda api: _otp(api, OTP_CARD, pre_auth=True)),
    ("otp wrong then right", lambda api: _otp(api, OTP_CARD, wrong_first=True)),
    ("redirect approved", lambda api: _redirect(api, True)),
    ("redirect declined", lambda api: _redirect(api, False)),
    ("declined card", _decline),
    ("cancelled", _cancel),
    ("debit EMI approved", lambda api: _emi(api, "DEBIT_EMI", DEBIT_EMI_CARD, "HDFC DC", 3, 1200000)),
    ("debit EMI declined", lambda api: _emi(api, "DEBIT_EMI", DEBIT_EMI_CARD, "HDFC DC", 6, 1200000,
                                            approve=False)),
    ("credit EMI pre-auth (OTP)", lambda api: _emi(api, "CREDIT_EMI", {**CARD, "number": CREDIT_EMI_OTP_CARD},
                                                   "HDFC CC", 3, 2000000, pre_auth=True)),
    ("credit EMI no-cost brand", lambda api: _emi(
        api, "CREDIT_EMI", {**CARD, "number": CREDIT_EMI_PAGE_CARD}, "PNB CC", 3, 2000000,
        product_details=[{"product_code": "redmi_1", "product_amount": {"value": 2000000, "currency": "INR"}}])),
]


def run_demo(api_url: str, api_key: str, checkouts: int, timeout: float = 120.0) -> int:
    console = Console()
    api = OrchestratorClient(api_url, api_key, retries=0)
    try:
        api.session.get(f"{api.base_url}/health", timeout=3).raise_for_status()
    except Exception as exc:  # nothing to drive: say what to do instead of a table of errors
        console.print(f"[bold red]no orchestrator answers at {api_url}[/bold red] ({type(exc).__name__}): "
                      "start it first with `./run.sh up` (in another terminal), or pass --api-url")
        return 2
    api = OrchestratorClient(api_url, api_key)
    outcomes: list[Outcome] = []

    def one(i: int) -> Outcome:
        kind, fn = KINDS[i % len(KINDS)]
        started = time.monotonic()
        try:
            got = fn(api)
            status, offer = got if isinstance(got, tuple) else (got, None)
            return Outcome(kind, status, time.monotonic() - started, emi=offer)
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
    _emi_table(console, outcomes)
    errors = [o for o in outcomes if o.status == "ERROR"]
    for o in errors[:5]:
        console.print(f"[red]{o.kind}: {o.error}[/red]")
    return 1 if errors else 0


def _rupees(money: dict | None) -> str:
    return "-" if not money else f"₹{money['value'] / 100:,.2f}"


def _emi_table(console: Console, outcomes: list[Outcome]) -> None:
    """One row per EMI offer the demo's checkouts took: Plural's figures, to the paisa."""
    seen: dict[tuple, Outcome] = {}
    for o in outcomes:
        if o.emi:
            seen.setdefault((o.emi["issuer"]["id"], o.emi["tenure"]["tenure_id"]), o)
    if not seen:
        return
    table = Table(title="EMI offers taken (Plural's figures)")
    for column in ("offer", "monthly", "total", "interest", "discount", "card pays"):
        table.add_column(column, no_wrap=column != "offer")
    for o in seen.values():
        e = o.emi or {}
        offer = (f"{e['issuer']['name']}, {e['tenure']['months']} mo at {e['interest_rate_percentage']} % "
                 f"{e['emi_type']}")
        table.add_row(offer, _rupees(e["monthly_emi_amount"]), _rupees(e["total_emi_amount"]),
                      _rupees(e["interest_amount"]), _rupees(e["discount_amount"]), _rupees(e["payment_amount"]))
    console.print(table)

"""The chaos run's audit of the sandbox's ledger and of our checkouts against it: what no correct
orchestrator may ever make Plural do. A tool of the chaos run (it reads our saga), not part of
the sandbox's imitation of Plural."""

from __future__ import annotations

import collections
from typing import Any

from orchestrator.domain.saga import GatewayView, gateway_view

#: what happens at most once per order
ONCE = ("ORDER_CREATED", "PAYMENT_CREATED", "AUTHORIZED", "CAPTURED")


def ledger_problems(entries: list[dict[str, Any]]) -> list[str]:
    """Per order: nothing in ``ONCE`` twice, no refund reference twice, captured ≤ authorized,
    refunded ≤ captured. An empty list when the ledger is clean."""
    problems = []
    by_order: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in entries:
        by_order[e["order_id"]].append(e)
    for order_id, rows in by_order.items():
        kinds = collections.Counter(e["kind"] for e in rows)
        problems += [f"{order_id}: {kind} x{kinds[kind]}" for kind in ONCE if kinds[kind] > 1]
        refs = collections.Counter(e.get("merchant_refund_reference") for e in rows if e["kind"] == "REFUND_CREATED")
        problems += [f"{order_id}: refund {r} x{n}" for r, n in refs.items() if n > 1]
        total = {k: sum(e["amount"]["value"] for e in rows if e["kind"] == k) for k in ("AUTHORIZED", "CAPTURED",
                                                                                         "REFUNDED")}
        if total["CAPTURED"] > total["AUTHORIZED"]:
            problems.append(f"{order_id}: captured {total['CAPTURED']} > authorized {total['AUTHORIZED']}")
        if total["REFUNDED"] > total["CAPTURED"]:
            problems.append(f"{order_id}: refunded {total['REFUNDED']} > captured {total['CAPTURED']}")
    return problems


def agrees_with_plural(checkout: dict[str, Any], order: dict[str, Any]) -> bool:
    """Does a checkout that has come to rest (its JSON, as ``GET /v1/checkouts/{id}`` shows it)
    agree with its order at Plural (Get Order's JSON)?"""
    payments = order.get("payments") or []
    view = gateway_view(order["status"], payments[0]["status"] if payments else None)
    captured = sum(c["capture_amount"]["value"] for p in payments for c in p.get("capture_data") or [])
    state = checkout["state"]
    if state == "COMPLETED":
        return view is GatewayView.PROCESSED and captured == checkout["captured_amount"]["value"]
    if state == "AUTHORIZED":
        return view is GatewayView.AUTHORIZED
    if state in ("CANCELLED", "EXPIRED"):
        if checkout.get("late_undo") == "REFUNDED":  # paid too late, and refunded in full
            refunded = sum(r["amount"]["value"] for r in checkout.get("refunds") or [] if r["status"] == "PROCESSED")
            return view is GatewayView.PROCESSED and refunded == captured
        return view in (GatewayView.CANCELLED, GatewayView.FAILED, GatewayView.PAYMENT_FAILED) or (
            view is GatewayView.PENDING and not any(p["status"] in ("PENDING", "AUTHORIZED") for p in payments))
    if state == "FAILED":
        return view in (GatewayView.FAILED, GatewayView.PAYMENT_FAILED, GatewayView.PENDING)
    return state == "NEEDS_ATTENTION"

"""The bank's page (3-D Secure's ACS): the customer approves or declines, and goes back to the shop."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from devkit.sandbox.gateway import Gateway, GatewayError


def add_routes(app: FastAPI, gateway: Gateway) -> None:
    # --- the ACS (3-D Secure) page ------------------------------------------------------

    @app.get("/sandbox/acs/{payment_id}", response_class=HTMLResponse)
    async def acs_page(payment_id: str, token: str = "") -> HTMLResponse:
        try:
            _state, order, public = gateway.acs_view(payment_id, token)
        except GatewayError as exc:
            return HTMLResponse(f"<h1>{html.escape(exc.message)}</h1>", status_code=exc.status)
        return HTMLResponse(_acs_html(payment_id, token, order, public))

    async def decide(payment_id: str, request: Request, approve: bool) -> Response:
        form = parse_qs((await request.body()).decode())
        token = (form.get("token") or [request.query_params.get("token", "")])[0]
        try:
            target = gateway.acs_decide(payment_id, token, approve)
        except GatewayError as exc:
            return HTMLResponse(f"<h1>{html.escape(exc.message)}</h1>", status_code=exc.status)
        if target:
            return RedirectResponse(target, status_code=303)
        outcome = "approved" if approve else "declined"
        return HTMLResponse(f"<h1>Payment {outcome}</h1><p>The order has no callback URL.</p>")

    @app.post("/sandbox/acs/{payment_id}/approve")
    async def acs_approve(payment_id: str, request: Request) -> Response:
        return await decide(payment_id, request, True)

    @app.post("/sandbox/acs/{payment_id}/decline")
    async def acs_decline(payment_id: str, request: Request) -> Response:
        return await decide(payment_id, request, False)


def _acs_html(payment_id: str, token: str, order: dict[str, Any], payment: dict[str, Any]) -> str:
    amount = payment["payment_amount"]
    card = (payment.get("payment_option") or {}).get("card_data") or {}
    e = html.escape
    rupees = f"{amount['value'] // 100}.{amount['value'] % 100:02d}"
    status = payment["status"]
    if status != "PENDING":
        buttons = f"<p>This payment is already <b>{e(status)}</b>.</p>"
    else:
        buttons = "".join(
            f'<form method="post" action="/sandbox/acs/{e(payment_id)}/{action}" style="display:inline">'
            f'<input type="hidden" name="token" value="{e(token)}">'
            f'<button id="{action}" type="submit" class="{action}">{label}</button></form> '
            for action, label in (("approve", "Approve"), ("decline", "Decline"))
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Sandbox 3-D Secure</title>
<style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}button{{font-size:1.1rem;padding:.6rem 1.4rem}}
.approve{{background:#1a7f37;color:#fff}}.decline{{background:#b42318;color:#fff}}td{{padding:.2rem .8rem}}</style>
</head><body><h1>Plural sandbox &mdash; 3-D Secure</h1>
<table><tr><td>Order</td><td>{e(order['order_id'])}</td></tr>
<tr><td>Amount</td><td>{e(amount['currency'])} {rupees}</td></tr>
<tr><td>Card</td><td>{e(card.get('network_name', ''))} **** {e(card.get('last4_digits', ''))}</td></tr>{_emi_rows(payment)}</table>
<p>This page stands in for the issuing bank's authentication page.</p>{buttons}</body></html>"""


def _emi_rows(payment: dict[str, Any]) -> str:
    """The EMI the customer is agreeing to, as the bank's page shows it."""
    offer = (payment.get("offer_data") or {}).get("offer_details") or {}
    tenure = offer.get("tenure") or {}
    monthly = (tenure.get("monthly_emi_amount") or {}).get("value")
    if not isinstance(monthly, int):
        return ""
    e = html.escape
    kind = "Debit EMI" if payment.get("payment_method") == "DEBIT_EMI" else "Credit EMI"
    return (f"<tr><td>{kind}</td><td>{e(str(offer.get('name', '')))}, {e(str(tenure.get('name', '')))} at "
            f"{e(str(tenure.get('interest_rate_percentage', '')))} %</td></tr>"
            f"<tr><td>Monthly</td><td>INR {monthly // 100}.{monthly % 100:02d}</td></tr>")

"""The sandbox gateway over HTTP: Plural UAT's paths, plus ``/sandbox/*`` for the ACS page and tests."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import threading
import time
import re
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
import structlog

from devkit.sandbox import offers
from devkit.sandbox.faults import Faults
from devkit.sandbox.gateway import Gateway, GatewayError, SandboxConfig
from devkit.sandbox.webhooks import SCHEDULES, TIMESTAMPS, WebhookSender

log = structlog.get_logger(__name__)

PLURAL_PREFIXES = ("/api/",)
ADMIN_PREFIXES = ("/sandbox/config", "/sandbox/offers", "/sandbox/faults", "/sandbox/reset", "/sandbox/clock", "/sandbox/tokens")


def _error(exc: GatewayError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise GatewayError(400, "INVALID_REQUEST", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(400, "INVALID_REQUEST", "body must be a JSON object")
    return data


_ORDER_PATH = re.compile(r"^/api/pay/v1/orders/([^/]+)/(payments|capture|cancel)$")
_REFUND_PATH = re.compile(r"^/api/pay/v1/refunds/([^/]+)$")


async def _idempotency_key(request: Request) -> tuple[str, ...] | None:
    """The reference a Plural call is idempotent on (None for calls that have none)."""
    if request.method not in ("POST", "PUT"):
        return None
    path = request.url.path
    order_call = _ORDER_PATH.match(path)
    if path != "/api/pay/v1/orders" and not order_call and not _REFUND_PATH.match(path):
        return None
    if order_call and order_call.group(2) == "cancel":
        return ("cancel", order_call.group(1))
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if path == "/api/pay/v1/orders":
        reference = body.get("merchant_order_reference")
        return ("order", str(reference)) if reference else None
    if _REFUND_PATH.match(path):
        reference = body.get("merchant_order_reference")
        return ("refund", str(reference)) if reference else None
    assert order_call is not None
    if order_call.group(2) == "capture":
        reference = body.get("merchant_capture_reference")
        return ("capture", str(reference)) if reference else None
    items = body.get("payments")
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    reference = first.get("merchant_payment_reference")
    return ("payment", order_call.group(1), str(reference)) if reference else None


class StateKeeper:
    """Saves the gateway's durable state to a file when it changed (atomically), and restores it."""

    def __init__(self, gateway: Gateway, path: Path, every: float = 1.0):
        self.gateway, self.path, self.every = gateway, Path(path), every
        self.saved = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.path.exists():
            self.saved = self.path.read_bytes()
            gateway.restore(self.saved)

    def save(self) -> None:
        blob = self.gateway.snapshot()
        if blob == self.saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_bytes(blob)
        os.replace(partial, self.path)
        self.saved = blob

    def _run(self) -> None:
        pause = self.every
        while not self._stop.wait(pause):
            started = time.perf_counter()
            try:
                self.save()
            except Exception as exc:  # a full disk must not stop the gateway
                log.warning("sandbox.state_not_saved", error=type(exc).__name__)
            # a big state takes long to serialize (under the gateway's lock): save it less often,
            # so that saving never takes more than a twentieth of the time
            pause = max(self.every, 20 * (time.perf_counter() - started))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sandbox-state", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.save()


def create_app(config: SandboxConfig | None = None, *, faults: Faults | None = None, webhook_url: str | None = None,
               webhook_key: bytes = b"sandbox-webhook-secret", webhook_schedule: str = "plural",
               webhook_time_scale: float = 1 / 600, webhook_timestamps: str = "original",
               admin_key: str = "sandbox-admin-key", state_file: Path | None = None) -> FastAPI:
    """``state_file``: where the sandbox keeps its orders, payments and ledger across restarts
    (saved within a second of a change, and at shutdown; restored at start). ``webhook_*``: the
    retry schedule, its compression and the timestamps of retries (``sandbox.webhooks``)."""
    config = config or SandboxConfig()
    faults = faults or Faults()
    sender = WebhookSender(webhook_url, webhook_key, faults, schedule=webhook_schedule,
                           time_scale=webhook_time_scale, timestamps=webhook_timestamps)
    gateway = Gateway(config, emit=sender.send)
    keeper = StateKeeper(gateway, state_file) if state_file is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if keeper is not None:
            keeper.start()
        yield
        sender.close()
        if keeper is not None:
            keeper.stop()

    app = FastAPI(title="Plural sandbox gateway", version="1", docs_url="/sandbox/docs",
                  openapi_url="/sandbox/openapi.json", lifespan=lifespan)
    app.state.gateway, app.state.faults, app.state.webhooks = gateway, faults, sender

    @app.exception_handler(GatewayError)
    async def gateway_error(_request: Request, exc: GatewayError) -> JSONResponse:
        return _error(exc)

    @app.middleware("http")
    async def admin_only(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """The sandbox's controls (config, faults, reset, clock, tokens) need ``X-Sandbox-Key``."""
        if request.url.path.startswith(ADMIN_PREFIXES):
            given = request.headers.get("x-sandbox-key") or ""
            if not secrets.compare_digest(given.encode(), admin_key.encode()):
                return _error(GatewayError(401, "UNAUTHORIZED", "the sandbox's controls need X-Sandbox-Key"))
        return await call_next(request)

    @app.middleware("http")
    async def inject_faults(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if not path.startswith(PLURAL_PREFIXES):
            return await call_next(request)
        key = await _idempotency_key(request)
        if key is not None and not gateway.begin_request(key):
            gateway.duplicates_refused += 1
            return _error(GatewayError(409, "DUPLICATE_REQUEST", "a request with this reference is already in progress"))
        fired = faults.match(request.method, path)
        try:
            return await _with_faults(request, fired, call_next)
        finally:  # the request is in progress from its arrival until its answer leaves
            if key is not None:
                gateway.end_request(key)

    async def _with_faults(request: Request, fired: list[Any],
                           call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        for rule in fired:
            if rule.kind == "latency":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "error":
                status = faults.pick(rule.statuses)
                code = "PAYMENT_RATE_LIMIT" if status == 429 else "INTERNAL_ERROR"
                headers = {"Retry-After": "1"} if status == 429 else {}
                return JSONResponse({"code": code, "message": "injected fault"}, status_code=status, headers=headers)
            elif rule.kind == "hang_before":
                await asyncio.sleep(rule.seconds)
                return JSONResponse({"code": "INTERNAL_ERROR", "message": "gateway timeout"}, status_code=504)
        response = await call_next(request)
        for rule in fired:
            if rule.kind == "hang_after":
                await asyncio.sleep(rule.seconds)
            elif rule.kind == "drop_answer":  # handled, but its answer never reaches the caller
                async for _chunk in response.body_iterator:  # type: ignore[attr-defined]
                    pass
                status = faults.pick(rule.statuses)
                return JSONResponse({"code": "INTERNAL_ERROR", "message": "injected fault: answer lost"},
                                    status_code=status)
        return response

    def auth(request: Request, *, required: bool = True) -> None:
        gateway.check_token(request.headers.get("authorization"), required=required)

    # --- Plural's API -------------------------------------------------------------------

    @app.post("/api/auth/v1/token")
    async def token(request: Request) -> Any:
        return gateway.issue_token(await _body(request))

    @app.post("/api/pay/v1/orders")
    async def create_order(request: Request) -> Any:
        auth(request)
        return gateway.create_order(await _body(request))

    @app.get("/api/pay/v1/orders/reference/{reference}")
    async def order_by_reference(reference: str, request: Request) -> Any:
        auth(request)
        return gateway.get_order_by_reference(reference)

    @app.get("/api/pay/v1/orders/{order_id}")
    async def get_order(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.get_order(order_id)

    @app.post("/api/pay/v1/orders/{order_id}/payments")
    async def create_payment(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.create_payment(order_id, await _body(request))

    @app.put("/api/pay/v1/orders/{order_id}/capture")
    async def capture(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.capture(order_id, await _body(request))

    @app.put("/api/pay/v1/orders/{order_id}/cancel")
    async def cancel(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.cancel(order_id)

    @app.post("/api/pay/v1/refunds/{order_id}")
    async def refund(order_id: str, request: Request) -> Any:
        auth(request)
        return gateway.refund(order_id, await _body(request))

    @app.post("/api/pay/v1/getCardDetails")
    async def card_details(request: Request) -> Any:
        auth(request)
        return gateway.card_details(await _body(request))

    # Plural's OTP samples carry no Authorization header: a token is checked when one is sent
    @app.post("/api/pay/v1/otp/generate")
    async def otp_generate(request: Request) -> Any:
        auth(request, required=False)
        return gateway.generate_otp(await _body(request))

    @app.post("/api/pay/v1/otp/submit")
    async def otp_submit(request: Request) -> Any:
        auth(request, required=False)
        return gateway.submit_otp(await _body(request))

    @app.post("/api/pay/v1/otp/resend")
    async def otp_resend(request: Request) -> Any:
        auth(request, required=False)
        return gateway.resend_otp(await _body(request))

    @app.post("/api/affordability/v1/offer/discovery")
    async def offer_discovery(request: Request) -> Any:
        auth(request)
        return gateway.discover_offers(await _body(request))

    @app.post("/api/affordability/v1/offer/validate")
    async def offer_validate(request: Request) -> Any:
        auth(request)
        return gateway.validate_offer(await _body(request))

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

    # --- for tests and demos ------------------------------------------------------------

    @app.get("/sandbox/health")
    async def health() -> Any:
        return {"status": "ok", "orders": len(gateway.orders), "webhooks_pending": sender.pending(),
                "duplicates_refused": gateway.duplicates_refused, "webhooks_late": sender.late}

    @app.get("/sandbox/ledger")
    async def ledger(request: Request) -> Any:
        """Every money movement, or (``?order_id=…``, repeatable) those of the orders named."""
        return {"entries": gateway.ledger_view(request.query_params.getlist("order_id") or None)}

    @app.get("/sandbox/webhooks")
    async def webhooks() -> Any:
        return {"deliveries": sender.view(), "pending": sender.pending()}

    @app.get("/sandbox/faults")
    async def get_faults() -> Any:
        return faults.to_dict()

    @app.put("/sandbox/faults")
    async def put_faults(request: Request) -> Any:
        try:
            faults.replace(await _body(request))
        except (TypeError, ValueError) as exc:
            raise GatewayError(400, "INVALID_REQUEST", f"bad fault set: {exc}") from None
        return faults.to_dict()

    @app.delete("/sandbox/faults")
    async def clear_faults() -> Any:
        faults.clear()
        return faults.to_dict()

    @app.get("/sandbox/config")
    async def get_config() -> Any:
        data = {k: v for k, v in asdict(config).items() if k not in ("callback_key", "client_secret", "offers")}
        return {**data, "webhook_url": sender.url, "webhook_schedule": sender.schedule,
                "webhook_time_scale": sender.time_scale, "webhook_timestamps": sender.timestamps}

    @app.put("/sandbox/config")
    async def put_config(request: Request) -> Any:
        body = await _body(request)
        if "webhook_url" in body:
            sender.url = body.pop("webhook_url") or None
        scale = body.get("webhook_time_scale", 1.0)
        if body.get("webhook_schedule", "plural") not in SCHEDULES or body.get("webhook_timestamps", "fresh") \
                not in TIMESTAMPS or isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            raise GatewayError(400, "INVALID_REQUEST", f"webhook_schedule is one of {sorted(SCHEDULES)}, "
                               f"webhook_timestamps one of {list(TIMESTAMPS)}, webhook_time_scale a number >= 0")
        for key in ("webhook_schedule", "webhook_timestamps", "webhook_time_scale"):
            if key in body:
                setattr(sender, key.removeprefix("webhook_"), body.pop(key))
        for key, value in body.items():
            if key in ("callback_key", "client_id", "client_secret", "offers") or not hasattr(config, key):
                raise GatewayError(400, "INVALID_REQUEST", f"{key} cannot be set")
            if not isinstance(value, type(getattr(config, key))) and not (
                    isinstance(value, int) and isinstance(getattr(config, key), float)):
                raise GatewayError(400, "INVALID_REQUEST", f"{key} has the wrong type")
            setattr(config, key, value)
        return await get_config()

    @app.get("/sandbox/offers")
    async def get_offers() -> Any:
        return config.offers.model_dump(mode="json")

    @app.put("/sandbox/offers")
    async def put_offers(request: Request) -> Any:
        body = await _body(request)
        try:
            config.offers = offers.OfferBook.model_validate(body) if body else offers.DEFAULT_BOOK
        except ValueError as exc:
            raise GatewayError(400, "INVALID_REQUEST", f"offer book: {exc}") from None
        return await get_offers()

    @app.post("/sandbox/clock")
    async def advance_clock(request: Request) -> Any:
        body = await _body(request)
        seconds = body.get("advance")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise GatewayError(400, "INVALID_REQUEST", "advance must be a number of seconds >= 0")
        return {"offset": gateway.advance_clock(float(seconds))}

    @app.delete("/sandbox/clock")
    async def reset_clock() -> Any:
        gateway.reset_clock()
        return {"offset": 0.0}

    @app.post("/sandbox/tokens/expire")
    async def expire_tokens() -> Any:
        gateway.expire_tokens()
        return {"expired": True}

    @app.post("/sandbox/tokens/refuse")
    async def refuse_credentials(request: Request) -> Any:
        """A rotated secret: issued tokens stop working and the token call answers 422 for
        ``seconds`` (or until ``DELETE``)."""
        body = await _body(request)
        seconds = body.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0):
            raise GatewayError(400, "INVALID_REQUEST", "seconds must be a number >= 0, or absent (until DELETE)")
        gateway.refuse_credentials(None if seconds is None else float(seconds))
        return {"refusing": True, "seconds": seconds}

    @app.delete("/sandbox/tokens/refuse")
    async def accept_credentials() -> Any:
        gateway.accept_credentials()
        return {"refusing": False}

    @app.post("/sandbox/reset")
    async def reset() -> Any:
        gateway.reset()
        faults.clear()
        config.offers = offers.DEFAULT_BOOK
        return {"reset": True}

    return app


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

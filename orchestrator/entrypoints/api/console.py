"""The operator's console: server-rendered pages at ``/console``, no build step.

Behind its own credential (HTTP Basic, ``CONSOLE_USER`` / ``CONSOLE_PASSWORD``; without a password
the console does not exist). The list with filters and what is stuck; one checkout's timeline
(transitions, gateway calls with outcome and latency, Plural's webhooks, events delivered to the
merchant); and the operator's retry of a checkout that ``NEEDS_ATTENTION``, recorded in its
history under the operator's name. The retry form carries a token bound to the checkout and the
credential, so another site cannot post it with the browser's saved password. Its pages may not be
framed (``X-Frame-Options``, CSP ``frame-ancestors``), and a client address that sends wrong
credentials ``max_failures`` times in a minute gets 429 (with ``Retry-After``) until the oldest
of them is a minute old.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable

from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from jinja2 import DictLoader, Environment, select_autoescape
from starlette.concurrency import run_in_threadpool

from orchestrator.domain import saga
from orchestrator.merchant.service import CheckoutService
from orchestrator.merchant.errors import CheckoutError

STATUSES = sorted(set(saga.PUBLIC_STATUS.values()))
PREFIX = "/console"
#: on every console answer: no other site may frame it (clickjacking the retry button)
FRAME_HEADERS = ((b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'"))
#: the window failed credentials are counted in, and how many addresses are remembered at most
FAILURE_WINDOW = 60.0
MAX_ADDRESSES = 10_000


class FailureLimit:
    """Wrong credentials per client address: ``limit`` in ``window`` seconds, then refused until the
    oldest of them leaves the window. Per process; the oldest address is forgotten beyond ``MAX_ADDRESSES``."""

    def __init__(self, limit: int, window: float = FAILURE_WINDOW, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds until this address may try again, or None if it may now."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            if not failures:
                self._failures.pop(address, None)
            if len(failures) < self.limit:
                return None
            return max(1, int(failures[0] + self.window - now + 0.999))

    def failed(self, address: str) -> None:
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            failures.append(now)
            self._failures[address] = failures
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)


class FrameGuard:
    """Pure ASGI: the anti-framing headers on every answer under ``/console`` (errors too)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not (scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/")):
            return await self.app(scope, receive, send)

        async def framed(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *FRAME_HEADERS]}
            await send(message)

        await self.app(scope, receive, framed)

BASE = """<!doctype html><html><head><meta charset="utf-8"><title>{% block title %}{% endblock %} · orchestrator</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:10px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 24px}h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:12px}
th,td{border-bottom:1px solid #e3e6eb;padding:6px 8px;text-align:left;vertical-align:top}th{background:#eef0f4}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;background:#e3e6eb;font-size:12px}
.COMPLETED,.delivered,.succeeded,.applied{background:#d7f5dd}.FAILED,.failed{background:#fbd9d9}
.NEEDS_ATTENTION,.unknown,.in_flight{background:#fde9c4}.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:12px}
.card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:8px 14px}.card b{font-size:18px;display:block}
form.inline{display:inline}button{background:#1d5fd6;color:#fff;border:0;border-radius:4px;padding:6px 14px;cursor:pointer}
.muted{color:#6b7385}
</style></head><body><header><a href="/console">orchestrator console</a></header><main>
{% block main %}{% endblock %}</main></body></html>"""

LIST = """{% extends "base" %}{% block title %}checkouts{% endblock %}{% block main %}
<h1>Checkouts</h1>
{% if o.credentials.rejected %}<p id="credentials" class="card FAILED"><b>Plural refuses our client credentials</b>
since {{o.credentials.since}} ({{o.credentials.seconds}} s): check PLURAL_CLIENT_ID / PLURAL_CLIENT_SECRET. Checkouts wait
(up to CREDENTIALS_WAIT_SECONDS, then NEEDS_ATTENTION) and go on by themselves once the credentials work.</p>{% endif %}
<div class="cards">{% for status, count in o.by_status.items() %}<div class="card"><span class="badge {{status}}">{{status}}</span><b>{{count}}</b></div>{% endfor %}
<div class="card">overdue<b id="overdue">{{o.overdue.count}}</b></div>
<div class="card">events pending<b>{{o.events.pending}}</b></div><div class="card">events failed<b>{{o.events.failed}}</b></div></div>
{% if o.needs_attention or o.overdue.oldest %}<h2>Stuck</h2><table id="stuck"><tr><th>checkout</th><th>why</th><th>since / late by</th></tr>
{% for a in o.needs_attention %}<tr><td><a href="/console/checkouts/{{a.id}}">{{a.id}}</a></td><td><span class="badge NEEDS_ATTENTION">NEEDS_ATTENTION</span> stuck in {{a.stuck_in}}: {{a.reason}}</td><td>{{a.since}}</td></tr>{% endfor %}
{% for a in o.overdue.oldest %}<tr><td><a href="/console/checkouts/{{a.id}}">{{a.id}}</a></td><td>overdue in {{a.state}}</td><td>{{a.late_seconds}} s</td></tr>{% endfor %}</table>{% endif %}
<h2>List</h2>
<form method="get" action="/console"><select name="status"><option value="">every status</option>
{% for s in statuses %}<option value="{{s}}" {% if s == status %}selected{% endif %}>{{s}}</option>{% endfor %}</select>
<button type="submit">filter</button></form>
<table id="checkouts"><tr><th>checkout</th><th>status</th><th>amount</th><th>method</th><th>reference</th><th>created</th><th>error</th></tr>
{% for c in page.checkouts %}<tr><td><a href="/console/checkouts/{{c.id}}">{{c.id}}</a></td><td><span class="badge {{c.status}}">{{c.status}}</span></td>
<td>{{c.amount.value}} {{c.amount.currency}}</td><td>{{c.payment_method}}{% if c.pre_auth %} · pre-auth{% endif %}</td>
<td>{{c.merchant_order_reference}}</td><td class="muted">{{c.created_at}}</td><td>{{c.error.code if c.error else ""}}</td></tr>{% endfor %}</table>
{% if page.next_cursor %}<a href="/console?status={{status or ''}}&cursor={{page.next_cursor}}">older →</a>{% endif %}
{% endblock %}"""

DETAIL = """{% extends "base" %}{% block title %}{{c.id}}{% endblock %}{% block main %}
<h1>{{c.id}} <span class="badge {{d.status}}">{{d.status}}</span></h1>
<p>{{c.amount_value}} {{c.currency}} (paise) · {{c.payment_method}}{% if c.pre_auth %} · pre-auth{% endif %} ·
order {{c.plural_order_id or "—"}} · reference {{c.merchant_order_reference}} · state {{c.state}}</p>
{% if c.error_code %}<p>error: <b>{{c.error_code}}</b> {{c.error_message}}</p>{% endif %}
{% if c.claim_token %}<p id="claim">held by a run until {{c.claim_until.isoformat(timespec="seconds")}}</p>{% endif %}
{% if c.next_due_at %}<p id="due">next due {{c.next_due_at.isoformat(timespec="seconds")}}</p>{% endif %}
{% if d.status == "NEEDS_ATTENTION" %}<p>stuck in <b>{{c.attention_from}}</b>: {{c.attention_reason}}</p>
<form class="inline" method="post" action="/console/checkouts/{{c.id}}/retry"><input type="hidden" name="token" value="{{token}}">
<button id="retry" type="submit">retry from {{c.attention_from}}</button></form>{% endif %}
<h2>Timeline</h2><table id="timeline"><tr><th>at</th><th>what</th><th>detail</th></tr>
{% for e in timeline %}<tr><td class="muted">{{e.at}}</td><td><span class="badge {{e.badge}}">{{e.kind}}</span></td><td>{{e.text}}</td></tr>{% endfor %}</table>
{% endblock %}"""

_templates = Environment(loader=DictLoader({"base": BASE, "list": LIST, "detail": DETAIL}),
                         autoescape=select_autoescape(default=True, default_for_string=True))


def _when(value: Any) -> str:
    return value.isoformat(sep=" ", timespec="milliseconds")[:23] if value is not None else ""


def timeline(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything that happened to a checkout, in time order."""
    items: list[dict[str, Any]] = []
    for t in d["history"]:
        items.append({"at": t.at, "kind": "transition", "badge": t.to_state,
                      "text": f"{t.from_state or '—'} → {t.to_state} ({t.fact or 'created'}, {t.source or '—'}): {t.reason}"})
    for a in d["attempts"]:
        ms = f"{int((a.finished_at - a.started_at).total_seconds() * 1000)} ms" if a.finished_at else "no answer yet"
        items.append({"at": a.started_at, "kind": f"call {a.step}", "badge": a.outcome,
                      "text": f"{a.outcome}, {ms}; reference {a.reference or '—'}; {a.detail or ''}"})
    for w in d["webhooks"]:
        items.append({"at": w.received_at, "kind": f"webhook {w.event_type}", "badge": w.status,
                      "text": f"{w.status}: {w.note or ''}"})
    for e in d["events"]:
        tries = ", ".join(f"{a.status_code or a.error or '—'} in {a.latency_ms} ms" for a in d["deliveries"][e.id])
        items.append({"at": e.created_at, "kind": f"event {e.type}", "badge": e.status,
                      "text": f"{e.event_id}: {e.status}{'; attempts: ' + tries if tries else ''}"})
    items.sort(key=lambda i: (i["at"].replace(tzinfo=None) if i["at"] is not None else 0))
    for item in items:
        item["at"] = _when(item["at"])
    return items


def mount(app: FastAPI, service: Callable[[], CheckoutService], user: str, password: str,
          max_failures: int = 10, limit: FailureLimit | None = None) -> None:
    basic = HTTPBasic(realm="orchestrator console")
    key = hashlib.sha256(f"console:{user}:{password}".encode()).digest()
    limit = limit or FailureLimit(max_failures)

    def operator(request: Request, credentials: HTTPBasicCredentials = Depends(basic)) -> str:
        address = request.client.host if request.client else "unknown"
        wait = limit.retry_after(address)
        if wait is not None:  # even the right credentials: guessing must stop
            raise HTTPException(429, "too many wrong console credentials; retry later",
                                headers={"Retry-After": str(wait)})
        right_user = secrets.compare_digest(credentials.username.encode(), user.encode())
        right_password = secrets.compare_digest(credentials.password.encode(), password.encode())
        if not (right_user and right_password):
            limit.failed(address)
            raise HTTPException(401, "wrong console credentials", headers={"WWW-Authenticate": "Basic"})
        return credentials.username

    def token_for(checkout_id: str) -> str:
        return hmac.new(key, checkout_id.encode(), hashlib.sha256).hexdigest()

    router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(operator)])

    @router.get("", response_class=HTMLResponse)
    def listing(status: str | None = Query(default=None), cursor: str | None = Query(default=None)) -> HTMLResponse:
        svc = service()
        status = status or None
        page = svc.list_checkouts(status if status in STATUSES else None, None, cursor, 50)
        o = svc.overview()
        return HTMLResponse(_templates.get_template("list").render(o=o, page=page, status=status,
                                                                   statuses=STATUSES))

    @router.get("/checkouts/{checkout_id}", response_class=HTMLResponse)
    def detail(checkout_id: str) -> HTMLResponse:
        d = service().checkout_detail(checkout_id)
        if d is None:
            raise HTTPException(404, f"no checkout {checkout_id}")
        return HTMLResponse(_templates.get_template("detail").render(
            c=d["checkout"], d=d, timeline=timeline(d), token=token_for(checkout_id)))

    @router.post("/checkouts/{checkout_id}/retry")
    async def retry(checkout_id: str, request: Request, who: str = Depends(operator)) -> RedirectResponse:
        token = parse_qs((await request.body()).decode(errors="replace")).get("token", [""])[0]
        if not hmac.compare_digest(token.encode(), token_for(checkout_id).encode()):
            raise HTTPException(403, "the form's token does not match this checkout")
        try:
            await run_in_threadpool(service().operator, checkout_id, "retry", None, f"{who} (console)")
        except CheckoutError as exc:
            raise HTTPException(exc.status, exc.message) from None
        return RedirectResponse(f"/console/checkouts/{checkout_id}", status_code=303)

    app.include_router(router)
    app.add_middleware(FrameGuard)

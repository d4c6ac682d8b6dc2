"""The merchant API (FastAPI): checkouts, OTP actions, cancel. OpenAPI at /docs and /openapi.json
(in the sandbox, or with ``API_DOCS=true``).

Every ``/v1`` route needs the ``X-API-Key`` header. Errors are ``{code, message}`` with a 4xx
status; validation errors never echo the submitted values (a card number would be among them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.entrypoints.api.batching import GroupCommit
from orchestrator.outbound.changes import Listener
from orchestrator.domain.money import MAX_AMOUNT
from orchestrator.domain.saga import PUBLIC_STATUS
from orchestrator.inbound.receiver import Inbound
from orchestrator.telemetry.logs import get_logger, mask_text
from orchestrator.saga.refunds import RefundRefused
from orchestrator.merchant.service import CheckoutService
from orchestrator.merchant.schemas import CheckoutIn, DeliveryIn, DiscoveryIn, OTPIn, RefundIn
from orchestrator.merchant.errors import MerchantError
from orchestrator.outbound.views import refund_view
from orchestrator.inbound.webhooks import WebhookRejected, require_signature_headers

if TYPE_CHECKING:
    from orchestrator.store.repo import IdempotencyStore, Keyed

log = get_logger("orchestrator.entrypoints.api")

PUBLIC_STATUSES = frozenset(PUBLIC_STATUS.values())
#: readiness fails on these only (the rest of its answer is information)
REQUIRED = ("database", "redis")
ISO_TIME = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$"
#: the longest long poll (below common proxies' idle timeouts)
MAX_WAIT = 30.0
#: the largest request bodies read, unless told otherwise (API_MAX_BODY_BYTES, WEBHOOK_MAX_BODY_BYTES)
MAX_BODY = 64 * 1024
MAX_WEBHOOK_BODY = 256 * 1024
WEBHOOK_PATHS = "/webhooks/"


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable ``code`` and a ``message``; some add details
    (``errors`` for validation, ``refundable``, ``retry_after``, ``unavailable``...)."""

    code: str
    message: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {400: "invalid request (the body, a field rule, a card that fails Luhn or has expired)",
                 401: "missing or wrong X-API-Key", 404: "no such checkout",
                 409: "not allowed in the checkout's status, a reference or Idempotency-Key conflict",
                 422: "refused by a business rule (amount limit, capture or refund above what is left)",
                 503: "the database, Redis or the broker is unavailable: nothing was changed, retry"}
    return {s: {"model": ErrorBody, "description": described[s]} for s in statuses}


#: what every merchant route may answer besides success
MERCHANT_ERRORS = _errors(400, 401, 404, 409, 422, 503)
#: routes whose effect stores the request's Idempotency-Key with its answer in its own transaction
KEYED_IN_TRANSACTION = frozenset({"/v1/checkouts"})
#: where such a route finds the key (``Keyed``) in the request's state
KEYED_STATE = "idempotency_key"
#: a merchant route needs the API key (documented as a security scheme; the guard checks it, so
#: a request pays for no dependency)
NEEDS_API_KEY: dict[str, Any] = {"security": [{"ApiKey": []}]}
API_KEY_SCHEME = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                  "description": "the merchant's API key (ORCHESTRATOR_API_KEY)"}
CALLBACK_ANSWERS: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/html": {}}, "description": "a page for the customer"},
        303: {"description": "the customer is sent to the merchant's callback or failure URL"},
        400: {"content": {"text/html": {}}, "description": "the signature does not match: nothing changed"},
        404: {"content": {"text/html": {}}, "description": "no checkout has this order"},
        503: {"content": {"text/html": {}}, "description": "the database is unavailable; the sweep polls"}}


class Guard:
    """Pure ASGI middleware in front of ``/v1``: the API key is checked before the body is read; a
    POST with an ``Idempotency-Key`` is answered once (Stripe's semantics); anything that escapes
    before the answer has started becomes a JSON answer. (Pure ASGI: no task group and no
    streams per request, as ``@app.middleware`` would cost.)"""

    def __init__(self, app: Any, api_key: str, idempotency: IdempotencyStore | None,
                 routed: Callable[[Any], bool]):
        self.app, self.api_key, self.idempotency, self.routed = app, api_key.encode(), idempotency, routed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        started = False

        async def sending(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            headers = Headers(scope=scope)
            given = headers.get("x-api-key") or ""
            if not given or not secrets.compare_digest(given.encode(), self.api_key):
                if self.routed(scope):  # a path or method no route takes stays a 404 or 405
                    return await error_answer(MerchantError(401, "UNAUTHORIZED", "missing or wrong X-API-Key"))(
                        scope, receive, send)
                return await self.app(scope, receive, sending)
            key = headers.get("idempotency-key")
            if key is not None and scope["method"] == "POST" and self.idempotency is not None and self.routed(scope):
                return await self._idempotent(scope, receive, sending, key, self.idempotency)
            return await self.app(scope, receive, sending)
        except Exception as exc:  # a handler's own failure, or the store's: still JSON
            if started:
                raise
            await error_answer(exc)(scope, receive, send)

    async def _idempotent(self, scope: Any, receive: Any, send: Any, key: str, store: IdempotencyStore) -> None:
        async def answer(response: Response) -> None:
            await response(scope, receive, send)

        if not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable():
            return await answer(error_answer(MerchantError(400, "INVALID_REQUEST",
                                                           "Idempotency-Key must be 1-255 printable ASCII")))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request_scope = f"{scope['method']} {scope['path']}"
        digest = hashlib.sha256(body).hexdigest()
        if scope["path"] in KEYED_IN_TRANSACTION:
            return await self._keyed_in_transaction(scope, body, receive, send,
                                                    store.keyed(key, request_scope, digest))
        outcome, row = await run_in_threadpool(store.begin, key, request_scope, digest)
        if outcome != "new":
            return await answer(_kept_answer(outcome, row))
        try:
            start, content = await self._answered(scope, body, receive)
        except Exception:
            await run_in_threadpool(store.forget, key, request_scope)
            raise
        status = int(start.get("status", 500))
        if status >= 500:
            await run_in_threadpool(store.forget, key, request_scope)
        else:
            await run_in_threadpool(store.finish, key, request_scope, status, content.decode())
        await send(start)
        await send({"type": "http.response.body", "body": content, "more_body": False})

    async def _keyed_in_transaction(self, scope: Any, body: bytes, receive: Any, send: Any, keyed: Keyed) -> None:
        """A route whose effect stores the key with its answer in its own transaction (``Keyed``):
        no transaction of the key's own on the way in or out. An answer the effect did not store
        (an error, an existing checkout) is kept with the key afterwards, unless the key already
        holds one: then that one is the answer (a replay, or a conflict)."""
        scope = {**scope, "state": {**scope.get("state", {}), KEYED_STATE: keyed}}
        start, content = await self._answered(scope, body, receive)
        status = int(start.get("status", 500))
        if not keyed.stored and status < 500:
            outcome, row = await run_in_threadpool(keyed.store.remember, keyed.key, keyed.scope, keyed.request_hash,
                                                   status, content.decode(), not keyed.taken)
            if outcome != "kept":
                return await _kept_answer(outcome, row)(scope, receive, send)
        await send(start)
        await send({"type": "http.response.body", "body": content, "more_body": False})

    async def _answered(self, scope: Any, body: bytes, receive: Any) -> tuple[dict[str, Any], bytes]:
        """Run the app on a request whose body was read already; its answer, kept (not sent)."""
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def keep(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, replay, keep)
        return start, b"".join(chunks)


class BodyTooLarge(StarletteHTTPException):
    """A request body above its cap (answered 413; what is beyond the cap is never read)."""

    def __init__(self, cap: int):
        super().__init__(413, f"the request body is larger than {cap} bytes")


class BodyLimit:
    """Pure ASGI middleware in front of everything: a body above its cap (``WEBHOOK_PATHS``' or
    the rest's) is a 413. A ``Content-Length`` above it is answered before anything is read;
    otherwise (chunked too) the body is counted as it streams in and reading stops at the cap."""

    def __init__(self, app: Any, cap: int, webhook_cap: int):
        self.app, self.cap, self.webhook_cap = app, cap, webhook_cap

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = self.webhook_cap if scope["path"].startswith(WEBHOOK_PATHS) else self.cap
        length = Headers(scope=scope).get("content-length", "").strip()
        if length.isdigit() and int(length) > cap:
            return await error_answer(BodyTooLarge(cap))(scope, receive, send)
        seen = 0
        started = False

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap)
            return message

        async def sending(message: Any) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, limited, sending)
        except BodyTooLarge as exc:  # not turned into an answer further in
            if started:
                raise
            await error_answer(exc)(scope, receive, send)


def _kept_answer(outcome: str, row: Any) -> Response:
    """What an Idempotency-Key already holds, as the answer: the first answer again, or why not."""
    if outcome == "replay":
        return Response(row.response_body or "", status_code=row.status_code, media_type="application/json",
                        headers={"Idempotent-Replayed": "true"})
    if outcome == "mismatch":
        return error_answer(MerchantError(409, "IDEMPOTENCY_KEY_REUSED",
                                          "this Idempotency-Key was used with another request body"))
    return error_answer(MerchantError(
        409, "IDEMPOTENCY_IN_PROGRESS", "a request with this Idempotency-Key is still being answered; retry"))


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc), "message": mask_text(str(err.get("msg", "invalid")))})
    return out


def error_answer(exc: BaseException) -> JSONResponse:
    """The one mapping of every error to a JSON ``{code, message}`` answer; infrastructure that
    is down is a 503 naming it. Nothing here echoes what the client sent."""
    if isinstance(exc, MerchantError):
        return JSONResponse(exc.body(), status_code=exc.status)
    if isinstance(exc, RefundRefused):
        return JSONResponse({"code": exc.code, "message": exc.message, **exc.details}, status_code=exc.status)
    if isinstance(exc, RequestValidationError):
        errors = _validation_errors(exc)
        if any(e.get("type") == "amount_limit" for e in exc.errors()):
            return JSONResponse({"code": "AMOUNT_LIMIT_EXCEEDED", "message": f"amounts are at most {MAX_AMOUNT} minor units",
                                 "errors": errors}, status_code=422)
        message = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return JSONResponse({"code": "INVALID_REQUEST", "message": message, "errors": errors}, status_code=400)
    if isinstance(exc, StarletteHTTPException):
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
                413: "PAYLOAD_TOO_LARGE", 429: "TOO_MANY_REQUESTS"}.get(exc.status_code, "ERROR")
        return JSONResponse({"code": code, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
    down = unavailable(exc)
    if down is not None:
        log.error("api.unavailable", dependency=down, error=type(exc).__name__)
        return JSONResponse({"code": "UNAVAILABLE", "message": f"the {down} is unavailable; nothing was changed",
                             "unavailable": down}, status_code=503)
    log.error("api.internal_error", error=type(exc).__name__, detail=mask_text(str(exc))[:300])
    return JSONResponse({"code": "INTERNAL_ERROR", "message": "an unexpected error; nothing was changed"},
                        status_code=500)


def unavailable(exc: BaseException) -> str | None:
    """Which dependency an exception says is down: database, redis or broker; None otherwise."""
    from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout

    if isinstance(exc, (OperationalError, PoolTimeout)) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return "database"
    try:
        import redis.exceptions

        if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return "redis"
    except ImportError:  # pragma: no cover
        pass
    try:
        import kombu.exceptions

        if isinstance(exc, kombu.exceptions.OperationalError):
            return "broker"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "broker"
    return None


def create_app(service_factory: Callable[[], CheckoutService], api_key: str,
               inbound: Callable[[], Inbound] | None = None,
               readiness: Callable[[], dict[str, Any]] | None = None,
               idempotency: IdempotencyStore | None = None, listener: Listener | None = None,
               console: tuple[str, str] | None = None, *, max_body: int = MAX_BODY,
               max_webhook_body: int = MAX_WEBHOOK_BODY, metrics_token: str | None = None,
               ops_public: bool = True, docs: bool = True, console_max_failures: int = 10) -> FastAPI:
    """The API. ``metrics_token``: ``/metrics`` and ``/ready``'s details want it as a bearer token;
    without one they are open if ``ops_public`` (``/metrics`` is a 404 otherwise, ``/ready`` says
    only its status). ``docs``: serve ``/docs`` and ``/openapi.json``."""
    listener = listener or Listener(None)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await listener.start()
        try:
            yield
        finally:
            await listener.stop()

    app = FastAPI(title="Plural payment orchestrator", version="1",
                  description="Checkouts driven through Plural (Pine Labs) to a final state.", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)

    def methods_of(request: Request) -> tuple[bool, set[str]]:
        """Does a route take this request (path and method), and which methods does its path allow?"""
        from starlette.routing import Match

        allowed: set[str] = set()
        for route in app.router.routes:
            match, _scope = route.matches(request.scope)
            if match is Match.FULL:
                return True, allowed
            if match is Match.PARTIAL:
                allowed |= set(getattr(route, "methods", None) or ())
        return False, allowed

    def answer(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
            allowed = methods_of(request)[1]
            return JSONResponse({"code": "METHOD_NOT_ALLOWED", "message": "Method Not Allowed"}, status_code=405,
                                headers={"Allow": ", ".join(sorted(allowed))})
        return error_answer(exc)

    for kind in (MerchantError, RefundRefused, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, answer)  # type: ignore[arg-type]

    def routed(scope: Any) -> bool:
        return methods_of(Request(scope))[0]

    app.add_middleware(Guard, api_key=api_key, idempotency=idempotency, routed=routed)
    app.add_middleware(BodyLimit, cap=max_body, webhook_cap=max_webhook_body)  # outside the Guard

    def ops_allowed(request: Request) -> bool:
        """May this request see /metrics and /ready's details?"""
        if metrics_token:
            given = request.headers.get("authorization", "")
            return secrets.compare_digest(given.encode(), f"Bearer {metrics_token}".encode())
        return ops_public

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:
        """Prometheus: every process's counters and the store's gauges, behind ``METRICS_TOKEN``
        (or open where ``ops_public``)."""
        from orchestrator.telemetry import metrics

        if not ops_allowed(request):
            if metrics_token:
                return JSONResponse({"code": "UNAUTHORIZED", "message": "/metrics wants the metrics bearer token"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return JSONResponse({"code": "NOT_FOUND", "message": "Not Found"}, status_code=404)

        svc = service_factory()
        text, kind = metrics.render(lambda: svc.overview(limit=1))
        return Response(text, media_type=kind)

    @app.get("/ready", include_in_schema=False)
    def ready(request: Request) -> JSONResponse:
        """Readiness: the database and Redis answer (503 naming what does not); Plural's token, the
        broker's queue lengths and the event backlog are reported beside them (the checks only to
        whom may see /metrics; anyone else gets the status alone)."""
        shown = ops_allowed(request)
        checks = readiness(full=shown) if readiness else {}
        failing = {name: result for name, result in checks.items() if name in REQUIRED and result != "ok"}
        answer: dict[str, Any] = {"status": "ok" if not failing else "unavailable"}
        if shown:
            answer["checks"] = checks
        return JSONResponse(answer, status_code=503 if failing else 200)

    @app.post("/v1/checkouts", status_code=202, openapi_extra=NEEDS_API_KEY, responses={
        200: {"description": "this merchant_order_reference already names this checkout: it is returned"},
        **MERCHANT_ERRORS})
    def create_checkout(body: CheckoutIn, request: Request) -> Response:
        svc = service_factory()
        keyed = request.scope.get("state", {}).get(KEYED_STATE)
        row, created = svc.create(body, keyed)
        if keyed is not None and keyed.stored:  # the answer kept with the key: sent as it was stored
            status, stored = keyed.answer
            return Response(stored, status_code=status, media_type="application/json")
        return JSONResponse(svc.view(row), status_code=202 if created else 200)

    @app.post("/v1/offers/discovery", openapi_extra=NEEDS_API_KEY, responses={
        200: {"description": "Plural's issuers and tenures for these terms, exactly as Plural sent them"},
        **MERCHANT_ERRORS})
    def offer_discovery(body: DiscoveryIn) -> JSONResponse:
        """EMI offer discovery: which issuers and tenures Plural offers on this amount and these products."""
        svc = service_factory()
        return JSONResponse(svc.discover(body))

    @app.get("/v1/checkouts", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def list_checkouts(status: str | None = Query(default=None, description="a public status"),
                       created_after: str | None = Query(default=None, pattern=ISO_TIME,
                                                         description="ISO 8601, e.g. 2026-11-22T10:00:00Z"),
                       cursor: str | None = Query(default=None, description="`next_cursor` of the previous page"),
                       limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:
        """Checkouts, newest first, a page at a time."""
        svc = service_factory()
        try:
            after = dt.datetime.fromisoformat(created_after) if created_after else None
            if after is not None:
                after = (after if after.tzinfo else after.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
        except (ValueError, OverflowError):
            raise MerchantError(400, "INVALID_REQUEST", "created_after is not a date and time") from None
        return svc.list_checkouts(status, after, cursor, limit)

    @app.get("/v1/events", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def events(after: str | None = Query(default=None, description="`next` of the previous page (a durable cursor)"),
               type: str | None = Query(default=None, description="one event type"),  # noqa: A002
               limit: int = Query(default=100, ge=1, le=1000)) -> dict[str, Any]:
        """Events for backends that pull: oldest first after the cursor."""
        svc = service_factory()
        return svc.events(after, type, limit)

    @app.post("/v1/events/{event_id}/redeliver", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def redeliver(event_id: str) -> dict[str, Any]:
        """Deliver an event again to ``MERCHANT_WEBHOOK_URL`` (same event id)."""
        svc = service_factory()
        return svc.redeliver(event_id)

    @app.get("/v1/checkouts/{checkout_id}", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    async def get_checkout(
            checkout_id: str,
            changed_from: str | None = Query(default=None, description=(
                "long poll: answer once the checkout's status is no longer this one (or after `wait`)")),
            wait: float = Query(default=0, ge=0, le=MAX_WAIT, description="seconds to wait for `changed_from`")) -> dict[str, Any]:
        """One checkout. With ``changed_from`` and ``wait``, a long poll: the answer comes the moment
        the status changes (or when ``wait`` runs out, unchanged), instead of polling."""
        svc = service_factory()
        if changed_from is not None and changed_from not in PUBLIC_STATUSES:
            raise MerchantError(400, "INVALID_REQUEST", f"changed_from must be one of {sorted(PUBLIC_STATUSES)}")
        if changed_from is None or wait <= 0:
            return await run_in_threadpool(svc.show, checkout_id)
        return await listener.wait_for_change(checkout_id, lambda: svc.show(checkout_id), lambda view: view["status"],
                                              lambda view: view["version"], changed_from, wait)

    @app.post("/v1/checkouts/{checkout_id}/otp", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def submit_otp(checkout_id: str, body: OTPIn) -> dict[str, Any]:
        svc = service_factory()
        return svc.answer_otp(checkout_id, body.otp)

    @app.post("/v1/checkouts/{checkout_id}/otp/resend", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def resend_otp(checkout_id: str) -> dict[str, Any]:
        svc = service_factory()
        return svc.view(svc.resend_otp(checkout_id))

    @app.post("/v1/checkouts/{checkout_id}/cancel", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def cancel(checkout_id: str) -> dict[str, Any]:
        svc = service_factory()
        return svc.view(svc.cancel(checkout_id))

    @app.post("/v1/checkouts/{checkout_id}/delivery", status_code=202, openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def delivery(checkout_id: str, body: DeliveryIn | None = None) -> dict[str, Any]:
        """Delivered: capture a pre-auth checkout, in full or for ``capture_amount``."""
        svc = service_factory()
        c = svc.get(checkout_id)
        amount = body.capture_amount if body else None
        if amount is not None and amount.currency != c.currency:
            raise MerchantError(400, "INVALID_REQUEST", f"capture_amount must be in {c.currency}")
        return svc.view(svc.deliver(checkout_id, amount.value if amount else None))

    @app.post("/v1/checkouts/{checkout_id}/refunds", status_code=202, openapi_extra=NEEDS_API_KEY, responses={
        200: {"description": "this merchant_refund_reference already names this refund: it is returned"},
        **MERCHANT_ERRORS})
    def refund(checkout_id: str, body: RefundIn | None = None) -> JSONResponse:
        """Refund a COMPLETED checkout, in full (default) or in part; idempotent on the reference."""
        svc = service_factory()
        c = svc.get(checkout_id)
        amount = body.amount if body else None
        if amount is not None and amount.currency != c.currency:
            raise MerchantError(400, "INVALID_REQUEST", f"amount must be in {c.currency}")
        row, created = svc.refund(checkout_id, amount.value if amount else None,
                                  body.merchant_refund_reference if body else None)
        return JSONResponse(refund_view(row), status_code=202 if created else 200)

    @app.get("/v1/checkouts/{checkout_id}/refunds", openapi_extra=NEEDS_API_KEY, responses=MERCHANT_ERRORS)
    def refunds(checkout_id: str) -> dict[str, Any]:
        svc = service_factory()
        svc.get(checkout_id)
        return {"refunds": [refund_view(r) for r in svc.refunds(checkout_id)]}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["ApiKey"] = API_KEY_SCHEME
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    if inbound is not None:
        _inbound_routes(app, inbound)
    if console is not None:  # (user, password): the operator's pages, behind their own credential
        from orchestrator.entrypoints.api.console import mount

        mount(app, service_factory, *console, max_failures=console_max_failures)
    return app


def _inbound_routes(app: FastAPI, inbound: Callable[[], Inbound]) -> None:
    # concurrent deliveries are stored together: one transaction and one kick per batch
    receipts: GroupCommit[Any, bool] = GroupCommit(lambda rows: inbound().store(rows))

    @app.post("/webhooks/plural", tags=["from Plural"], responses={
        **_errors(400, 503), 401: {"model": ErrorBody, "description": "missing, stale or wrong signature"}})
    async def plural_webhook(request: Request) -> JSONResponse:
        """Standard Webhooks from Plural: verified, stored once per webhook-id, applied asynchronously.
        A delivery without its signature headers is refused before its body is read."""
        try:
            require_signature_headers(request.headers)
        except WebhookRejected as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        body = await request.body()
        try:
            row = inbound().parse(body, dict(request.headers))  # HMAC and JSON: no I/O, no thread hop
            new = await receipts.submit(row)  # answered once its batch is committed
        except WebhookRejected as exc:
            return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)
        except Exception as exc:  # the database is down: Plural retries the delivery
            return error_answer(exc)
        return JSONResponse({"received": True, "duplicate": not new}, status_code=200)

    async def callback(fields: dict[str, str]) -> Response:
        try:
            answer = await run_in_threadpool(inbound().callback, fields)
        except Exception as exc:  # the database is down: the customer still gets a page, the sweep polls
            log.error("callback.unavailable", error=type(exc).__name__)
            return HTMLResponse("<!doctype html><title>Payment received</title><h1>Thank you</h1>"
                                "<p>We are confirming your payment; you can close this window.</p>", status_code=503)
        if answer.redirect:
            return RedirectResponse(answer.redirect, status_code=303)
        return HTMLResponse(answer.page or "", status_code=answer.status)

    @app.get("/callbacks/plural", tags=["from Plural"], response_class=HTMLResponse, responses=CALLBACK_ANSWERS)
    async def plural_callback_get(request: Request) -> Response:
        """The customer's browser back from Plural (fields in the query)."""
        return await callback(dict(request.query_params))

    @app.post("/callbacks/plural", tags=["from Plural"], response_class=HTMLResponse, responses=CALLBACK_ANSWERS)
    async def plural_callback_post(request: Request) -> Response:
        """The customer's browser back from Plural (fields posted as a form)."""
        form = parse_qs((await request.body()).decode(errors="replace"))
        return await callback({k: v[0] for k, v in form.items()})


def app_from_runtime() -> FastAPI:
    """The API wired to this process's settings, database, Redis and Celery."""
    from orchestrator.entrypoints.runtime import get_runtime

    rt = get_runtime()
    svc = rt.service()
    handler = rt.inbound()
    s = rt.settings
    return create_app(lambda: svc, s.orchestrator_api_key.get_secret_value(), lambda: handler,
                      readiness=rt.readiness, idempotency=rt.idempotency(), listener=Listener(s.broker_url),
                      console=((s.console_user, s.console_password.get_secret_value())
                               if s.console_password else None),
                      max_body=s.api_max_body_bytes, max_webhook_body=s.webhook_max_body_bytes,
                      metrics_token=s.metrics_token.get_secret_value() if s.metrics_token else None,
                      ops_public=s.ops_public, docs=s.docs_enabled, console_max_failures=s.console_max_failures)

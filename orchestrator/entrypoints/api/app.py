"""The merchant API (FastAPI): checkouts, OTP actions, cancel. OpenAPI at /docs and /openapi.json
(in the sandbox, or with ``API_DOCS=true``).

Every ``/v1`` route needs the ``X-API-Key`` header. Errors are ``{code, message}`` with a 4xx
status; validation errors never echo the submitted values (a card number would be among them).
The routes are in ``routes/``, what stands in front of them in ``guard.py``, the answers to errors
in ``errors.py``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from orchestrator.entrypoints.api import console as console_pages
from orchestrator.entrypoints.api.errors import error_answer
from orchestrator.entrypoints.api.guard import API_KEY_SCHEME, MAX_BODY, MAX_WEBHOOK_BODY, BodyLimit, Guard
from orchestrator.entrypoints.api.routes import checkouts, events, offers, ops, plural, refunds
from orchestrator.entrypoints.runtime import get_runtime
from orchestrator.inbound.receiver import Inbound
from orchestrator.merchant.errors import MerchantError
from orchestrator.merchant.service import CheckoutService
from orchestrator.outbound.changes import Listener

if TYPE_CHECKING:
    from orchestrator.store.idempotency import IdempotencyStore


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

    for kind in (MerchantError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, answer)  # type: ignore[arg-type]

    def routed(scope: Any) -> bool:
        return methods_of(Request(scope))[0]

    app.add_middleware(Guard, api_key=api_key, idempotency=idempotency, routed=routed)
    app.add_middleware(BodyLimit, cap=max_body, webhook_cap=max_webhook_body)  # outside the Guard

    ops.add(app, service_factory, readiness, metrics_token, ops_public)
    checkouts.add(app, service_factory, listener)
    offers.add(app, service_factory)
    events.add(app, service_factory)
    refunds.add(app, service_factory)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["ApiKey"] = API_KEY_SCHEME
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    if inbound is not None:
        plural.add(app, inbound)
    if console is not None:  # (user, password): the operator's pages, behind their own credential
        console_pages.mount(app, service_factory, *console, max_failures=console_max_failures)
    return app


def app_from_runtime() -> FastAPI:
    """The API wired to this process's settings, database, Redis and Celery."""
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

"""What Plural sends us: its webhooks, and the customer's browser back from its pages (the return URL)."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from orchestrator.entrypoints.api.batching import GroupCommit
from orchestrator.entrypoints.api.errors import ErrorBody, _errors, error_answer
from orchestrator.inbound.receiver import Inbound
from orchestrator.inbound.webhooks import WebhookRejected, require_signature_headers
from orchestrator.telemetry.logs import get_logger

log = get_logger("orchestrator.entrypoints.api")

CALLBACK_ANSWERS: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/html": {}}, "description": "a page for the customer"},
        303: {"description": "the customer is sent to the merchant's callback or failure URL"},
        400: {"content": {"text/html": {}}, "description": "the signature does not match: nothing changed"},
        404: {"content": {"text/html": {}}, "description": "no checkout has this order"},
        503: {"content": {"text/html": {}}, "description": "the database is unavailable; the sweep polls"}}



def add(app: FastAPI, inbound: Callable[[], Inbound]) -> None:
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


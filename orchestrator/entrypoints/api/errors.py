"""The API's answers to errors: every error is JSON ``{code, message, ...}`` with its status, mapped
in ONE place (``error_answer``); nothing here echoes what the client sent."""

from __future__ import annotations

from typing import Any

import kombu.exceptions
import redis.exceptions
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError, TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.domain.money import MAX_AMOUNT
from orchestrator.merchant.errors import MerchantError
from orchestrator.telemetry.logs import get_logger, mask_text

log = get_logger("orchestrator.entrypoints.api")


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
    if isinstance(exc, (OperationalError, PoolTimeout)) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return "database"
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return "redis"
    if isinstance(exc, kombu.exceptions.OperationalError):
        return "broker"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "broker"
    return None

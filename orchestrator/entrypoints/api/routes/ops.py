"""Liveness, readiness and the metrics scrape (not in the OpenAPI document)."""

from __future__ import annotations

import secrets
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from orchestrator.entrypoints.runtime import Runtime
from orchestrator.merchant.service import CheckoutService
from orchestrator.telemetry import metrics

#: readiness fails on these only (the rest of its answer is information)
REQUIRED = Runtime.REQUIRED


def add(app: FastAPI, service_factory: Callable[[], CheckoutService],
        readiness: Callable[..., dict[str, Any]] | None, metrics_token: str | None, ops_public: bool) -> None:
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

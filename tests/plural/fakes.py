"""A scripted transport: the seam the client is tested through (no network patching)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.plural.transport import Request, Response


class ScriptedTransport:
    """Answers token calls itself; every other call takes the next scripted step.

    A step is a ``Response``, an exception to raise, or a callable taking the ``Request``.
    """

    def __init__(self, *steps: Any, expires_in: int = 3600):
        self.steps = list(steps)
        self.requests: list[Request] = []
        self.token_calls = 0
        self.expires_in = expires_in

    def send(self, request: Request) -> Response:
        self.requests.append(request)
        if request.url.endswith("/api/auth/v1/token"):
            self.token_calls += 1
            return ok({"access_token": f"tok-{self.token_calls}", "expires_in": self.expires_in})
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return step(request)
        return step

    @property
    def api_requests(self) -> list[Request]:
        return [r for r in self.requests if not r.url.endswith("/api/auth/v1/token")]


def ok(body: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(body).encode(), {"content-type": "application/json"})


def err(status: int, code: str = "INTERNAL_ERROR", message: str = "x", headers: dict | None = None) -> Response:
    return Response(status, json.dumps({"code": code, "message": message}).encode(), headers or {})


ORDER = {"data": {"order_id": "v1-1-aa-x", "status": "CREATED", "merchant_order_reference": "r1", "payments": []}}


def requestor_kwargs(transport: Any, **extra: Any) -> dict[str, Any]:
    from orchestrator.plural.token import MemoryTokenStore

    base: dict[str, Any] = dict(api_base="http://plural.test", token_url="http://plural.test/api/auth/v1/token",
                                client_id="cid", client_secret="secret", transport=transport,
                                token_store=MemoryTokenStore(), max_attempts=3, sleep=lambda s: None)
    base.update(extra)
    return base

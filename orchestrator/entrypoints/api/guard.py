"""What stands in front of the routes (pure ASGI middleware): the API key, the body caps, and the
Idempotency-Key's one answer."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any, Callable

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.entrypoints.api.errors import error_answer
from orchestrator.merchant.errors import MerchantError

if TYPE_CHECKING:
    from orchestrator.store.idempotency import IdempotencyStore, Keyed

#: the largest request bodies read, unless told otherwise (API_MAX_BODY_BYTES, WEBHOOK_MAX_BODY_BYTES)
MAX_BODY = 64 * 1024
MAX_WEBHOOK_BODY = 256 * 1024
WEBHOOK_PATHS = "/webhooks/"
#: routes whose effect stores the request's Idempotency-Key with its answer in its own transaction
KEYED_IN_TRANSACTION = frozenset({"/v1/checkouts"})
#: where such a route finds the key (``Keyed``) in the request's state
KEYED_STATE = "idempotency_key"
#: a merchant route needs the API key (documented as a security scheme; the guard checks it, so
#: a request pays for no dependency)
NEEDS_API_KEY: dict[str, Any] = {"security": [{"ApiKey": []}]}
API_KEY_SCHEME = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                  "description": "the merchant's API key (ORCHESTRATOR_API_KEY)"}


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

"""The transport seam: one method that sends bytes and returns bytes.

``RequestsTransport`` is the real one (a pooled ``requests.Session``). Tests pass any object with
the same ``send`` method instead of patching the network. A transport raises only
``ConnectionFailed`` (never sent) or ``OutcomeUnknown`` (sent, no answer); any HTTP answer,
error statuses included, is returned as a ``Response``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

import requests
from requests.adapters import HTTPAdapter

from orchestrator.plural.errors import ConnectionFailed, OutcomeUnknown


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None
    timeout: tuple[float, float] = (5.0, 30.0)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


class Transport(Protocol):
    def send(self, request: Request) -> Response: ...


class RequestsTransport:
    """Pooled HTTP over ``requests``; no retries of its own (the requestor owns retrying)."""

    def __init__(self, pool_size: int = 32):
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def send(self, request: Request) -> Response:
        try:
            answer = self._session.request(
                request.method,
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=request.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise ConnectionFailed(f"connect timeout: {type(exc).__name__}") from None
        except requests.exceptions.ReadTimeout as exc:
            raise OutcomeUnknown(f"no answer in time: {type(exc).__name__}") from None
        except requests.exceptions.ConnectionError as exc:
            if _never_sent(exc):
                raise ConnectionFailed(f"could not connect: {type(exc).__name__}") from None
            raise OutcomeUnknown(f"connection lost: {type(exc).__name__}") from None
        except requests.exceptions.RequestException as exc:
            raise OutcomeUnknown(f"transport error: {type(exc).__name__}") from None
        return Response(status=answer.status_code, body=answer.content, headers=dict(answer.headers))

    def close(self) -> None:
        self._session.close()


def _never_sent(exc: BaseException) -> bool:
    """Did a ``ConnectionError`` happen before any byte of the request left?"""
    from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        if isinstance(current, MaxRetryError):
            stack.append(current.reason)
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        stack.append(current.__cause__)
        stack.append(current.__context__)
    return False

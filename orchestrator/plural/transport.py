"""The transport seam: one method that sends bytes and returns bytes.

``PooledTransport`` is the real one (urllib3's connection pools, which ``requests`` is built on:
a call costs about half the CPU of the same call through a ``requests.Session``, as
``bench/transport.py`` prints). Tests pass any object with
the same ``send`` method instead of patching the network. A transport raises only
``ConnectionFailed`` (never sent) or ``OutcomeUnknown`` (sent, no answer); any HTTP answer,
error statuses included, is returned as a ``Response``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

import urllib3

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


class PooledTransport:
    """Pooled HTTP over urllib3; no retries or redirects of its own (the requestor owns retrying)."""

    def __init__(self, pool_size: int = 32):
        self._pool = urllib3.PoolManager(num_pools=8, maxsize=pool_size, block=False, retries=False)

    def send(self, request: Request) -> Response:
        connect, read = request.timeout
        try:
            answer = self._pool.request(request.method, request.url, body=request.body,
                                        headers=dict(request.headers), redirect=False,
                                        timeout=urllib3.Timeout(connect=connect, read=read))
        except urllib3.exceptions.NewConnectionError as exc:  # a subclass of the connect timeout
            raise ConnectionFailed(f"could not connect: {type(exc).__name__}") from None
        except urllib3.exceptions.ConnectTimeoutError as exc:
            raise ConnectionFailed(f"connect timeout: {type(exc).__name__}") from None
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise OutcomeUnknown(f"no answer in time: {type(exc).__name__}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if _never_sent(exc):
                raise ConnectionFailed(f"could not connect: {type(exc).__name__}") from None
            raise OutcomeUnknown(f"connection lost: {type(exc).__name__}") from None
        return Response(status=answer.status, body=answer.data, headers=dict(answer.headers))

    def close(self) -> None:
        self._pool.clear()


def _never_sent(exc: BaseException) -> bool:
    """Did a connection error happen before any byte of the request left?"""
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

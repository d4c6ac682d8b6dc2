"""The one requestor: token, headers, retries and error mapping for every call to Plural."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from typing import Any, Callable

from orchestrator.telemetry.logs import get_logger
from orchestrator.plural import errors, retry
from orchestrator.plural.models import PluralModel, TokenRequest, TokenResponse
from orchestrator.plural.token import AccessToken, TokenManager, TokenStore
from orchestrator.plural.transport import Request, Response, Transport

log = get_logger(__name__)


def request_timestamp(now: float) -> str:
    """ISO 8601 UTC with milliseconds, as Plural's samples: ``2024-07-09T07:57:08.022Z``."""
    moment = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Requestor:
    def __init__(
        self,
        *,
        api_base: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        transport: Transport,
        token_store: TokenStore,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        token_margin: float = 300.0,
        token_refusal_cooldown: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        observe: Callable[[str, str, str, float], None] | None = None,
    ):
        #: told of every call: (method, path, outcome: "ok" or the exception's class, seconds)
        self.observe = observe
        self.api_base = api_base.rstrip("/")
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._transport = transport
        self._timeout = (connect_timeout, read_timeout)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self.tokens = TokenManager(token_store, self.fetch_token, margin=token_margin, clock=clock,
                                   refusal_cooldown=token_refusal_cooldown)

    # --- token --------------------------------------------------------------------------

    def fetch_token(self) -> AccessToken:
        body = TokenRequest(client_id=self._client_id, client_secret=self._client_secret)
        now = self._clock()
        try:
            data = self._call("POST", self.token_url, body.wire(), replay_safe=True, auth=False, otp_call=False)
        except errors.APIError as exc:
            if exc.status not in errors.CREDENTIALS_REFUSED_STATUSES:
                raise
            log.error("plural.token.credentials_rejected", status=exc.status, code=exc.code,
                      request_id=exc.request_id)
            raise errors.CredentialsRejected(exc.message, status=exc.status, code=exc.code,
                                             request_id=exc.request_id) from None
        try:
            parsed = TokenResponse.model_validate(data)
        except ValueError:
            raise errors.ResponseFormatError("token response has no access_token") from None
        log.info("plural.token.refreshed", expires_in=parsed.expires_in, expires_at=str(parsed.expires_at))
        return AccessToken(value=parsed.access_token, expires_at=parsed.expiry_epoch(now), issued_at=now)

    # --- calls --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: PluralModel | dict[str, Any] | None = None,
        *,
        replay_safe: bool,
        auth: bool = True,
        otp_call: bool = False,
    ) -> Any:
        payload = body.wire() if isinstance(body, PluralModel) else body
        if self.observe is None:
            return self._call(method, self.api_base + path, payload, replay_safe=replay_safe, auth=auth,
                              otp_call=otp_call)
        started, outcome = time.perf_counter(), "ok"
        try:
            return self._call(method, self.api_base + path, payload, replay_safe=replay_safe, auth=auth,
                              otp_call=otp_call)
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.observe(method, path, outcome, time.perf_counter() - started)

    def _call(
        self, method: str, url: str, payload: Any, *, replay_safe: bool, auth: bool, otp_call: bool
    ) -> Any:
        request_id = str(uuid.uuid4())
        encoded = json.dumps(payload).encode() if payload is not None else None
        attempt = 0
        refreshed_after_401 = False
        earlier_unknown = False  # an earlier attempt of this request may have been acted on
        while True:
            attempt += 1
            token = self.tokens.get() if auth else None
            headers = {
                "accept": "application/json",
                "Request-ID": request_id,
                "Request-Timestamp": request_timestamp(self._clock()),
            }
            if encoded is not None:
                headers["Content-Type"] = "application/json"
            if token:
                headers["Authorization"] = f"Bearer {token}"
            started = time.monotonic()
            try:
                response = self._transport.send(Request(method, url, headers, encoded, self._timeout))
            except errors.TransportError as exc:
                exc.request_id = request_id
                sent = isinstance(exc, errors.OutcomeUnknown)
                earlier_unknown = earlier_unknown or sent
                log.warning("plural.request.no_answer", method=method, url=url, attempt=attempt,
                            request_id=request_id, error=str(exc), may_have_reached_plural=sent)
                if retry.should_retry(attempt=attempt, max_attempts=self._max_attempts,
                                      replay_safe=replay_safe, status=None, sent=sent):
                    self._sleep(retry.backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap,
                                                    rand=self._rand))
                    continue
                raise
            elapsed_ms = round((time.monotonic() - started) * 1000, 1)
            log.debug("plural.request", method=method, url=url, status=response.status, attempt=attempt,
                      request_id=request_id, elapsed_ms=elapsed_ms)
            if 200 <= response.status < 300:
                return self._decode(response, request_id)
            if response.status == 401 and auth and not refreshed_after_401 and token:
                # a token Plural no longer accepts: drop it, fetch a new one once, try again
                refreshed_after_401 = True
                self.tokens.invalidate(token)
                attempt -= 1
                continue
            error = self._error(response, request_id, otp_call)
            if earlier_unknown and 400 <= response.status < 500 and response.status not in (401, 429):
                # a refusal of our own repeat ("in progress", "already captured") says nothing final
                # about the first attempt, which may have been acted on: the caller must look it up
                raise errors.OutcomeUnknown(
                    f"a retry was refused ({response.status} {error.code}) after an attempt whose outcome is unknown",
                    request_id=request_id) from error
            if response.status >= 500:
                earlier_unknown = earlier_unknown or method != "GET"
            if retry.should_retry(attempt=attempt, max_attempts=self._max_attempts, replay_safe=replay_safe,
                                  status=response.status):
                log.warning("plural.request.retry", method=method, url=url, status=response.status,
                            code=error.code, attempt=attempt, request_id=request_id)
                self._sleep(retry.backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap,
                                                retry_after=error.retry_after, rand=self._rand))
                continue
            raise error

    @staticmethod
    def _decode(response: Response, request_id: str) -> Any:
        if not response.body:
            return {}
        try:
            return json.loads(response.body)
        except ValueError:
            raise errors.ResponseFormatError("answer is not JSON", request_id=request_id,
                                             body=response.body[:200]) from None

    @staticmethod
    def _error(response: Response, request_id: str, otp_call: bool) -> errors.APIError:
        try:
            body: Any = json.loads(response.body) if response.body else None
        except ValueError:
            body = response.body.decode(errors="replace")
        code, message, details = errors.parse_error_body(body)
        cls = errors.error_class(response.status, code, otp_call=otp_call)
        return cls(
            message or f"HTTP {response.status}",
            status=response.status,
            code=code,
            request_id=request_id,
            details=details,
            retry_after=retry.parse_retry_after(response.header("Retry-After")),
        )

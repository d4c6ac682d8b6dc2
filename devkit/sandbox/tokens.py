"""The sandbox gateway's tokens: Plural's token endpoint and the bearer tokens it hands out; credentials
refused on demand."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from devkit.sandbox.state import GatewayError, Ledger, SEED_SAMPLE_CLIENTS, SEED_SAMPLE_TOKEN, _refused


class Tokens(Ledger):
    """Plural's token endpoint and the bearer tokens it hands out; credentials the sandbox refuses on demand."""

    def issue_token(self, body: dict[str, Any]) -> dict[str, Any]:
        """Plural's Generate Token: ``access_token`` and ``expires_at`` (ISO 8601, UTC; or
        ``expires_in`` seconds, as the seeds' samples, with ``token_expiry="in"``). Its
        reference lists 200, 405, 422 and 500: bad credentials, and a body it cannot use, are 422."""
        client_id, secret = body.get("client_id"), body.get("client_secret")
        if body.get("grant_type") != "client_credentials":
            raise _refused("grant_type must be client_credentials", source="grant_type")
        known = {self.config.client_id: self.config.client_secret, **SEED_SAMPLE_CLIENTS}
        if not client_id or known.get(str(client_id)) != secret:
            raise GatewayError(422, "UNAUTHORIZED", "invalid client credentials")
        with self.lock:
            if self.refusing_credentials(locked=True):
                raise GatewayError(422, "UNAUTHORIZED", "invalid client credentials")
            token = "sbx_" + secrets.token_urlsafe(32)
            expiry = self.clock() + self.config.token_ttl
            self.tokens[token] = expiry
        if self.config.token_expiry == "in":
            return {"access_token": token, "expires_in": int(self.config.token_ttl)}
        at = dt.datetime.fromtimestamp(expiry, tz=dt.timezone.utc)
        return {"access_token": token, "expires_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}

    def refuse_credentials(self, seconds: float | None) -> None:
        """A rotated secret, as Plural would see it: every issued token stops working and the
        client credentials are refused (422) for ``seconds`` (until ``accept_credentials`` when
        None). Tests and chaos use it."""
        with self.lock:
            self.tokens.clear()
            self.credentials_refused_until = float("inf") if seconds is None else self.clock() + seconds

    def accept_credentials(self) -> None:
        with self.lock:
            self.credentials_refused_until = None

    def refusing_credentials(self, *, locked: bool = False) -> bool:
        if not locked:
            with self.lock:
                return self.refusing_credentials(locked=True)
        until = self.credentials_refused_until
        if until is not None and self.clock() >= until:
            self.credentials_refused_until = until = None
        return until is not None

    def check_token(self, authorization: str | None, *, required: bool = True) -> None:
        if not authorization:
            if required:
                raise GatewayError(401, "UNAUTHORIZED", "missing bearer token")
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GatewayError(401, "UNAUTHORIZED", "malformed Authorization header")
        if token == SEED_SAMPLE_TOKEN:
            return
        expiry = self.tokens.get(token)
        if expiry is None or expiry <= self.clock():
            raise GatewayError(401, "UNAUTHORIZED", "token is invalid or expired")

    def expire_tokens(self) -> None:
        """Make every issued token stale (tests of the client's 401 handling)."""
        with self.lock:
            self.tokens.clear()

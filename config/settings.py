"""One validated settings object for every process (API, worker, beat, sandbox, CLI).

Values come from the environment (and a ``.env`` file in the working directory). Secrets are
``SecretStr`` so they never print. Outside ``PLURAL_ENV=sandbox`` a placeholder secret is
refused at start with a message naming the variable.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Secrets shipped as defaults so that the sandbox works out of the box. Never valid elsewhere.
PLACEHOLDER_PREFIX = "sandbox-"
SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret"
SANDBOX_WEBHOOK_SECRET = "sandbox-webhook-secret"
# hex, as Plural hands the return-URL key over; the string is only valid in sandbox
SANDBOX_CALLBACK_SECRET = "73616e64626f782d63616c6c6261636b2d736563726574"
SANDBOX_API_KEY = "sandbox-api-key"
#: the port of the Redis ``python -m devkit up`` (``./run.sh up``) embeds, unless told otherwise
EMBEDDED_REDIS_PORT = 6390
# a Standard Webhooks secret (whsec_ + base64) for events to the merchant; only valid in sandbox
SANDBOX_MERCHANT_WEBHOOK_SECRET = "whsec_c2FuZGJveC1tZXJjaGFudC13ZWJob29rLXNlY3JldA=="
#: the sandbox's admin endpoints (config, faults, reset, clock) want this in ``X-Sandbox-Key``
SANDBOX_ADMIN_KEY = "sandbox-admin-key"
# a Fernet key (urlsafe base64 of 32 bytes) that is only good for the sandbox
SANDBOX_CARD_KEY = "c2FuZGJveC1jYXJkLWtleS1ub3QtZm9yLXByb2QhISE="

PLACEHOLDERS = {
    SANDBOX_MERCHANT_WEBHOOK_SECRET,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_WEBHOOK_SECRET,
    SANDBOX_CALLBACK_SECRET,
    SANDBOX_API_KEY,
    SANDBOX_CARD_KEY,
}


class PluralEnv(str, Enum):
    sandbox = "sandbox"
    uat = "uat"
    production = "production"


DEFAULT_API_BASES = {
    PluralEnv.sandbox: "http://127.0.0.1:8700",
    PluralEnv.uat: "https://pluraluat.v2.pinepg.in",
    PluralEnv.production: "https://api.pluralpay.in",
}


#: the hosts of Plural's own API: outside the sandbox no other host is accepted unless listed in
#: PLURAL_ALLOWED_API_BASES (a proxy of the merchant's own, say)
PLURAL_HOSTS = frozenset({"pluraluat.v2.pinepg.in", "api.pluralpay.in"})


def merchant_webhook_key(secret: str) -> bytes:
    """The raw key of a Standard Webhooks secret (``whsec_`` + base64), decoded as the
    ``standardwebhooks`` library decodes it (so as the merchant's receiver does): padded or not.
    The one decoder of ``MERCHANT_WEBHOOK_SECRET``, for the settings' check and for the signer."""
    import base64
    import binascii

    try:  # the library pads, then decodes leniently (extra padding is skipped)
        key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    except (binascii.Error, ValueError):
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64") from None
    if not key:
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64 (not empty)")
    return key


def resolve_host(host: str, port: int) -> set[str]:
    """The addresses ``host`` resolves to (an address is itself); ``OSError`` if it does not."""
    import socket

    return {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}


def _public(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # an IPv4 address inside an IPv6 one is judged as itself: mapped (::ffff:a.b.c.d), 6to4
        # (2002:…), NAT64 (64:ff9b::/96) and the old compatible form (::a.b.c.d)
        packed = ip.packed
        inner = (ip.ipv4_mapped or ip.sixtofour
                 or (ipaddress.IPv4Address(packed[12:]) if ip in ipaddress.ip_network("64:ff9b::/96") else None)
                 or (ipaddress.IPv4Address(packed[12:]) if packed[:12] == bytes(12) and int(ip) > 1 else None))
        if inner is not None:
            ip = inner
    return ip.is_global and not ip.is_multicast


def merchant_url_problem(url: str, allow_private: bool, unresolved_ok: bool) -> str | None:
    """Why events may not be pushed to ``url`` outside the sandbox (None: they may): it must be
    https, and its host must not resolve to a loopback, link-local, private or otherwise
    non-public address unless ``allow_private``. A host that does not resolve is let through if
    ``unresolved_ok`` (at settings load: the check at send time refuses it)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 443
    except ValueError:
        return "is not a URL"
    if parts.scheme != "https" or not host:
        return "must be an https URL outside the sandbox"
    if allow_private:
        return None
    try:
        addresses = resolve_host(host, port)
    except (OSError, UnicodeError):
        return None if unresolved_ok else f"host {host} does not resolve"
    refused = sorted(a for a in addresses if not _public(a))
    if refused:
        return (f"host {host} resolves to a non-public address ({', '.join(refused)}); "
                "set MERCHANT_WEBHOOK_ALLOW_PRIVATE=true if that is meant")
    return None


class ConfigurationError(RuntimeError):
    """Settings that cannot be used; the message says which variable and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    # --- Plural -------------------------------------------------------------------------
    plural_env: PluralEnv = PluralEnv.sandbox
    plural_api_base: str | None = Field(default=None, description="API base URL; default per PLURAL_ENV")
    plural_token_url: str | None = Field(default=None, description="token URL; default {base}/api/auth/v1/token")
    plural_client_id: str = SANDBOX_CLIENT_ID
    plural_client_secret: SecretStr = SecretStr(SANDBOX_CLIENT_SECRET)
    plural_webhook_secret: SecretStr = SecretStr(SANDBOX_WEBHOOK_SECRET)
    plural_callback_secret: SecretStr = SecretStr(SANDBOX_CALLBACK_SECRET)
    plural_allowed_api_bases: str = Field(default="", description="comma-separated extra API bases allowed "
                                                                  "outside the sandbox (https only)")

    # --- HTTP client --------------------------------------------------------------------
    http_connect_timeout: float = Field(default=5.0, gt=0)
    http_read_timeout: float = Field(default=30.0, gt=0)
    http_max_attempts: int = Field(default=4, ge=1, le=10)
    http_backoff_base: float = Field(default=0.25, ge=0)
    http_backoff_cap: float = Field(default=8.0, ge=0)
    token_refresh_margin: float = Field(default=300.0, ge=0, description="seconds before expiry to refresh")

    # --- storage ------------------------------------------------------------------------
    data_dir: Path = Path("var")
    database_url: str | None = None
    redis_url: str | None = None

    # --- merchant API and card vault ----------------------------------------------------
    orchestrator_api_key: SecretStr = SecretStr(SANDBOX_API_KEY)
    card_encryption_key: SecretStr = SecretStr(SANDBOX_CARD_KEY)
    card_ttl_seconds: int = Field(default=900, gt=0)
    #: Plural's documented maximum order amount (₹10 lakh); a merchant with another agreement raises
    #: it, up to the 64-bit-safe limit every money field has (10_000_000_000 paise)
    max_order_amount: int = Field(default=100_000_000, gt=0, le=10_000_000_000)
    customer_action_timeout: int = Field(default=900, gt=0)
    public_base_url: str = "http://127.0.0.1:8000"
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024, description=(
        "the largest request body the API reads (/v1, callbacks, console); larger: 413"))
    webhook_max_body_bytes: int = Field(default=256 * 1024, ge=1024, description=(
        "the largest webhook body read from Plural at /webhooks/plural; larger: 413"))

    # --- operations endpoints (/metrics, /ready's details, /docs) -----------------------
    metrics_token: SecretStr | None = Field(default=None, description=(
        "bearer token /metrics (and /ready's details) want in Authorization; unset: open in the "
        "sandbox, off elsewhere (unless METRICS_PUBLIC)"))
    metrics_public: bool | None = Field(default=None, description=(
        "serve /metrics and /ready's details without a token; default: only with PLURAL_ENV=sandbox"))
    api_docs: bool | None = Field(default=None, description=(
        "serve /docs and /openapi.json; default: only with PLURAL_ENV=sandbox"))

    # --- events to the merchant's backend -----------------------------------------------
    merchant_webhook_url: str | None = Field(default=None, description=(
        "where events are POSTed, signed with Standard Webhooks; unset: events are only pulled"))
    merchant_webhook_secret: SecretStr = SecretStr(SANDBOX_MERCHANT_WEBHOOK_SECRET)
    merchant_webhook_allow_private: bool = Field(default=False, description=(
        "outside the sandbox, allow MERCHANT_WEBHOOK_URL on a loopback, link-local or private address"))
    merchant_events_task: str | None = Field(default=None, description=(
        "a Celery task name on this broker that also receives each event (myshop.tasks.on_payment_event)"))
    merchant_event_retry_seconds: float = Field(default=3 * 86400.0, gt=0, description=(
        "how long an event's delivery is retried (exponential backoff) before it is marked failed"))
    merchant_webhook_timeout: float = Field(default=10.0, gt=0, description="seconds per delivery attempt")
    merchant_event_backoff: str = Field(default="5,30,120,600,1800,3600,10800,21600", description=(
        "seconds before each retry of an event's delivery, then every 12 hours"))

    # --- the operator's console ----------------------------------------------------------
    console_user: str = Field(default="operator", description="user name for /console (HTTP Basic)")
    console_password: SecretStr | None = Field(default=None, description="password for /console; unset: no console")
    console_max_failures: int = Field(default=10, ge=1, description=(
        "wrong console credentials a client address may send per minute before it gets 429"))

    # --- saga timing and workers ------------------------------------------------------
    poll_schedule: str = Field(default="5,10,30,60,120,300", description="seconds between Get Order polls")
    step_lease_seconds: float = Field(default=120.0, gt=0, description="re-drive a step not finished by then")
    claim_lease_seconds: float = Field(default=30.0, ge=1.0, description=(
        "a run's claim on its checkout lapses this long after its process last renewed it (every third "
        "of it, while the run lives, up to the run lease): a dead worker's checkouts are free within it"))
    retry_backoff_base: float = Field(default=2.0, gt=0)
    retry_backoff_cap: float = Field(default=300.0, gt=0)
    step_max_attempts: int = Field(default=8, ge=1, description="failed tries of a step before NEEDS_ATTENTION")
    step_max_age_seconds: float = Field(default=3600.0, gt=0,
                                        description="no progress in an active state this long: NEEDS_ATTENTION")
    attention_poll_seconds: float = Field(default=600.0, gt=0, description="Get Order period while NEEDS_ATTENTION")
    credentials_wait_seconds: float = Field(default=1800.0, gt=0, description=(
        "Plural refusing our client credentials (a rotated or mistyped secret) is a configuration fault: "
        "a checkout's step waits for it this long, then NEEDS_ATTENTION (credentials_rejected)"))
    credentials_retry_seconds: float = Field(default=15.0, gt=0, description=(
        "how often a step waiting for accepted credentials tries again"))
    watch_seconds: float = Field(default=2 * 86400.0, gt=0,
                                 description="how long a cancel Plural refused is watched for a late payment")
    sweep_interval: float = Field(default=5.0, gt=0)
    sweep_batch: int = Field(default=200, ge=1)
    broker_visibility_timeout: int = Field(default=600, ge=5)
    worker_concurrency: int = Field(default=32, ge=1)
    step_chain: int = Field(default=4, ge=0, description=(
        "steps a task may run back to back for one checkout (the next step is ready at once) before "
        "handing the next one to the queue; 0 sends every step through the broker"))
    otp_ttl_seconds: int = Field(default=300, gt=0)
    otp_max_attempts: int = Field(default=3, ge=1, description="wrong OTPs Plural allows (shown to the customer)")
    hold_days: float = Field(default=7.0, gt=0, description="how long an authorization holds at the issuer")
    hold_margin_seconds: float = Field(default=6 * 3600.0, ge=0, description="release holds this long before")

    # --- logging ------------------------------------------------------------------------
    log_level: str = "INFO"
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")

    # --- sandbox gateway ----------------------------------------------------------------
    sandbox_webhook_url: str | None = None
    sandbox_duplicates: Literal["refuse", "replay"] = Field(
        default="refuse", description="a repeated order, payment, capture or refund reference: 422 "
                                      "DUPLICATE_REQUEST (Plural's error list) or the object already made")
    sandbox_webhook_schedule: Literal["plural", "three"] = Field(
        default="plural", description="webhook retries: plural (0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) "
                                      "or three (up to three retries), as Plural's two documents say")
    sandbox_webhook_time_scale: float = Field(default=1 / 600, ge=0,
                                              description="the retry schedule runs this much faster (1: real time)")
    sandbox_webhook_timestamps: Literal["original", "fresh"] = Field(
        default="original", description="a retry's webhook-timestamp: the event's (original) or the attempt's")
    sandbox_second_generate_otp: Literal["refuse", "resend"] = Field(
        default="refuse", description="a second Generate OTP for a payment: 422 OTP_ALREADY_GENERATED, or a "
                                      "fresh OTP sent and 200 (Plural's documents are silent)")
    sandbox_token_expiry: Literal["at", "in"] = Field(
        default="at", description="the token's lifetime: expires_at (ISO 8601, Plural's token reference) or "
                                  "expires_in (seconds, the seeds' samples)")
    sandbox_otp_resend_after: int = Field(default=180, ge=0)
    sandbox_otp_resend_limit: int = Field(default=3, ge=0)
    sandbox_otp_max_attempts: int = Field(default=3, ge=1)
    sandbox_public_url: str | None = None
    sandbox_admin_key: SecretStr = SecretStr(SANDBOX_ADMIN_KEY)
    sandbox_strict: bool = Field(default=True, description="refuse what Plural refuses (cancel only AUTHORIZED, ...)")
    sandbox_payment_expiry_seconds: float = Field(default=900.0, ge=0,
                                                  description="an unpaid payment expires after this; 0: never")
    sandbox_offers_file: str | None = Field(default=None, description="a JSON EMI offer book for the sandbox "
                                                                      "(see devkit/sandbox/offer_book.py)")

    @field_validator("merchant_event_backoff")
    @classmethod
    def _backoff(cls, value: str) -> str:
        try:
            delays = [float(x) for x in value.split(",")]
        except ValueError:
            raise ValueError("must be comma-separated seconds") from None
        if not delays or any(d <= 0 for d in delays):
            raise ValueError("must be comma-separated positive seconds")
        return value

    @field_validator("merchant_webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr) -> SecretStr:
        merchant_webhook_key(value.get_secret_value())  # the signer's decoder: what passes here signs
        return value

    @field_validator("plural_callback_secret")
    @classmethod
    def _callback_secret_is_hex(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw or len(raw) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", raw):
            raise ValueError("PLURAL_CALLBACK_SECRET must be an even-length hex string")
        return value

    @model_validator(mode="after")
    def _no_placeholders_outside_sandbox(self) -> "Settings":
        if self.plural_env is PluralEnv.sandbox:
            return self
        offending = [
            name.upper()
            for name in (
                "plural_client_secret",
                "plural_webhook_secret",
                "plural_callback_secret",
                "orchestrator_api_key",
                "card_encryption_key",
            )
            if getattr(self, name).get_secret_value() in PLACEHOLDERS
        ]
        if self.merchant_webhook_url and self.merchant_webhook_secret.get_secret_value() in PLACEHOLDERS:
            offending.append("MERCHANT_WEBHOOK_SECRET")  # events signed with a published key
        if self.plural_client_id == SANDBOX_CLIENT_ID:
            offending.insert(0, "PLURAL_CLIENT_ID")
        if offending:
            raise ValueError(
                f"PLURAL_ENV={self.plural_env.value} refuses the sandbox placeholder values of "
                f"{', '.join(offending)}: set real values in the environment"
            )
        self._only_plurals_hosts()
        if self.merchant_webhook_url:
            problem = merchant_url_problem(self.merchant_webhook_url, self.merchant_webhook_allow_private,
                                           unresolved_ok=True)
            if problem:
                raise ValueError(f"PLURAL_ENV={self.plural_env.value} refuses MERCHANT_WEBHOOK_URL: {problem}")
        return self

    def _only_plurals_hosts(self) -> None:
        """Card data goes only to Plural: outside the sandbox, an API base or token URL on any other
        host (the sandbox's above all) is refused unless explicitly allowed."""
        from urllib.parse import urlsplit

        allowed = {b.strip().rstrip("/") for b in self.plural_allowed_api_bases.split(",") if b.strip()}
        for name, url in (("PLURAL_API_BASE", self.api_base), ("PLURAL_TOKEN_URL", self.token_url)):
            parts = urlsplit(url)
            if url.rstrip("/") in allowed or any(url.startswith(a + "/") for a in allowed):
                if parts.scheme != "https":
                    raise ValueError(f"{name}={url} must be https outside the sandbox")
                continue
            if parts.scheme != "https" or parts.hostname not in PLURAL_HOSTS:
                raise ValueError(f"PLURAL_ENV={self.plural_env.value} refuses {name}={url}: not one of Plural's hosts "
                                 f"({', '.join(sorted(PLURAL_HOSTS))}); list it in PLURAL_ALLOWED_API_BASES if "
                                 "it really is the way to Plural")

    @field_validator("poll_schedule")
    @classmethod
    def _schedule_is_numbers(cls, value: str) -> str:
        try:
            parts = [float(p) for p in value.split(",") if p.strip()]
        except ValueError:
            raise ValueError("POLL_SCHEDULE must be comma-separated seconds") from None
        if not parts or any(p <= 0 for p in parts):
            raise ValueError("POLL_SCHEDULE must list positive seconds")
        return value

    # --- derived values -----------------------------------------------------------------
    @property
    def poll_delays(self) -> tuple[float, ...]:
        return tuple(float(p) for p in self.poll_schedule.split(",") if p.strip())

    @property
    def pool_threads(self) -> int:
        """How many threads of one process may use a pool (database, Plural's sockets, Redis) at
        once: a worker's, or the API's thread pool (anyio's 40), whichever is more."""
        return max(self.worker_concurrency, 40)

    @property
    def call_budget_seconds(self) -> float:
        """The worst case of one gateway call: every attempt timing out, each wait the longest a
        Retry-After may ask for (four times the backoff cap)."""
        attempts = self.http_max_attempts
        return (attempts * (self.http_connect_timeout + self.http_read_timeout)
                + (attempts - 1) * 4 * self.http_backoff_cap)

    @property
    def run_lease_seconds(self) -> float:
        """The longest a run may own its checkout: longer than a step's worst case (three calls: a
        look-up, the call, a confirmation). Its process renews its claim up to this (``Leases``)."""
        return 3 * self.call_budget_seconds + 5.0

    @property
    def ops_public(self) -> bool:
        """Are /metrics and /ready's details served without a credential (the sandbox's default)?"""
        return self.metrics_public if self.metrics_public is not None else self.plural_env is PluralEnv.sandbox

    @property
    def docs_enabled(self) -> bool:
        """Are /docs and /openapi.json served (the sandbox's default)?"""
        return self.api_docs if self.api_docs is not None else self.plural_env is PluralEnv.sandbox

    @property
    def api_base(self) -> str:
        return (self.plural_api_base or DEFAULT_API_BASES[self.plural_env]).rstrip("/")

    @property
    def token_url(self) -> str:
        return self.plural_token_url or f"{self.api_base}/api/auth/v1/token"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            for short in ("postgres://", "postgresql://"):  # Heroku-style and plain URLs: psycopg 3
                if url.startswith(short):
                    return "postgresql+psycopg://" + url[len(short):]
            return url
        return f"sqlite:///{(self.data_dir / 'orchestrator.store').resolve()}"

    @property
    def broker_url(self) -> str:
        """``REDIS_URL``, or the embedded Redis that ``./run.sh up`` starts on its default port
        (so a worker or beat started on its own finds it)."""
        return self.redis_url or f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"

    def callback_key(self) -> bytes:
        return bytes.fromhex(self.plural_callback_secret.get_secret_value())

    def webhook_key(self) -> bytes:
        return self.plural_webhook_secret.get_secret_value().encode()

    def merchant_webhook_key(self) -> bytes:
        """The key events to the merchant are signed with (``MERCHANT_WEBHOOK_SECRET`` decoded)."""
        return merchant_webhook_key(self.merchant_webhook_secret.get_secret_value())

    def merchant_url_problem(self) -> str | None:
        """Why events may not be sent to ``MERCHANT_WEBHOOK_URL`` now (None in the sandbox, or when
        they may): checked again at every send, the host resolved afresh."""
        if self.plural_env is PluralEnv.sandbox or not self.merchant_webhook_url:
            return None
        return merchant_url_problem(self.merchant_webhook_url, self.merchant_webhook_allow_private,
                                    unresolved_ok=False)


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning a validation failure into a ``ConfigurationError`` with a clear text."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:  # pragma: no cover - message shaping only
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"{where}: {err['msg']}")
        raise ConfigurationError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

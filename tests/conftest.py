"""Shared fixtures: settings, a real sandbox over loopback HTTP, a webhook catcher, a client."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest
import requests

# Tests never read a developer's .env or environment by accident.
for _name in list(os.environ):
    if _name.startswith(("PLURAL_", "ORCHESTRATOR_", "SANDBOX_")) or _name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(_name)

from config import Settings  # noqa: E402
from config.settings import SANDBOX_ADMIN_KEY  # noqa: E402

_plain_request = requests.Session.request


def _as_sandbox_admin(self: requests.Session, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
    """The tests are the sandbox's admin: its controls (faults, config, clock) get the admin key."""
    if "/sandbox/" in str(url):
        kwargs["headers"] = {"X-Sandbox-Key": SANDBOX_ADMIN_KEY, **(kwargs.get("headers") or {})}
    return _plain_request(self, method, url, *args, **kwargs)


requests.Session.request = _as_sandbox_admin  # type: ignore[method-assign]
from orchestrator.telemetry.logs import configure_logging  # noqa: E402

configure_logging("WARNING", "console")


def at_once(fn: Any, n: int) -> list[Any]:
    """Call ``fn`` from ``n`` threads released together; their results, in finishing order."""
    barrier = threading.Barrier(n)
    results: list[Any] = []

    def run() -> None:
        barrier.wait()
        results.append(fn())

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedUvicorn:
    """A real uvicorn server on loopback, in a thread of the test process."""

    def __init__(self, app: Any, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadedUvicorn":
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(5)


@dataclass
class Caught:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookCatcher:
    url: str
    received: list[Caught] = field(default_factory=list)
    status: int = 200

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[Caught]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hits = [c for c in list(self.received) if predicate(c)]
            if hits:
                return hits
            time.sleep(0.02)
        raise AssertionError("no matching webhook arrived")


@pytest.fixture(scope="session")
def webhook_catcher() -> Iterator[WebhookCatcher]:
    catcher = WebhookCatcher(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            catcher.received.append(Caught({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(catcher.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    catcher.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield catcher
    server.shutdown()


@pytest.fixture(scope="session")
def sandbox_settings() -> Settings:
    return Settings(sandbox_otp_resend_after=1)


@pytest.fixture(scope="session")
def sandbox_server(sandbox_settings: Settings, webhook_catcher: WebhookCatcher) -> Iterator[ThreadedUvicorn]:
    from devkit.sandbox import app_from_settings

    port = free_port()
    app = app_from_settings(sandbox_settings, port=port, webhook_url=webhook_catcher.url)
    app.state.webhooks.time_scale = 0.0001  # Plural's schedule, compressed: 10 h in 3.6 s
    with ThreadedUvicorn(app, port) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: ThreadedUvicorn, webhook_catcher: WebhookCatcher) -> Iterator[ThreadedUvicorn]:
    """The shared sandbox, with no faults and a healthy webhook catcher for each test."""
    webhook_catcher.status = 200
    requests.delete(sandbox_server.url + "/sandbox/faults", timeout=5)
    yield sandbox_server
    requests.delete(sandbox_server.url + "/sandbox/faults", timeout=5)
    requests.delete(sandbox_server.url + "/sandbox/clock", timeout=5)
    requests.delete(sandbox_server.url + "/sandbox/tokens/refuse", timeout=5)


@pytest.fixture
def client(sandbox: ThreadedUvicorn, sandbox_settings: Settings) -> Any:
    from orchestrator.plural import PluralClient

    settings = sandbox_settings.model_copy(update={"plural_api_base": sandbox.url})
    return PluralClient.from_settings(settings, backoff_base=0.01, backoff_cap=0.05, read_timeout=5.0)


def ledger(base_url: str, *order_ids: str | None) -> list[dict[str, Any]]:
    """The sandbox's ledger: every entry, or those of the orders named."""
    params = {"order_id": [str(i) for i in order_ids]} if order_ids else None
    return requests.get(base_url + "/sandbox/ledger", params=params, timeout=5).json()["entries"]


# --- the saga with real collaborators, no Celery ----------------------------------------

class Clock:
    """A clock tests can move forward."""

    def __init__(self) -> None:
        import datetime as dt

        self.offset = dt.timedelta()
        self._dt = dt

    def __call__(self) -> Any:
        return self._dt.datetime.now(self._dt.timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += self._dt.timedelta(seconds=seconds)


@dataclass
class Harness:
    """Service + steps over SQLite (migrated), fakeredis and the real sandbox; enqueued steps run on drain()."""

    deps: Any
    service: Any
    clock: Clock
    sandbox_url: str
    db_path: Any
    redis: Any
    queue: list = field(default_factory=list)
    mode: str = "strict"

    def status(self, checkout_id: str) -> str:
        """The public status the merchant sees."""
        from orchestrator.domain.saga import State, public_status

        return public_status(State(self.state(checkout_id)))

    def drain(self, limit: int = 100) -> None:
        from orchestrator.saga import runner

        ran = []
        for _ in range(limit):
            if not self.queue:
                return
            step, checkout_id = self.queue.pop(0)
            row = self.deps.repo.get(checkout_id)
            ran.append((step.value, checkout_id[-6:], row.state if row else "-"))
            runner.run(self.deps, step, checkout_id, "test-task")
        import collections

        raise AssertionError(f"the saga did not settle: {collections.Counter(ran).most_common(5)}")

    def state(self, checkout_id: str) -> str:
        return self.deps.repo.get(checkout_id).state

    def redeps(self, **collaborators: Any) -> Any:
        """The steps' collaborators with some replaced: another ``Deps``, so another engine (a
        Deps's engine keeps what it was built from)."""
        import dataclasses

        self.deps = dataclasses.replace(self.deps, **collaborators)
        return self.deps

    @property
    def inbound(self) -> Any:
        from orchestrator.inbound.receiver import Inbound

        s = self.deps.settings
        return Inbound(self.deps, s.webhook_key(), s.callback_key(), kick=lambda: None)

    def process_webhooks(self) -> int:
        from orchestrator.inbound.webhooks import process_pending

        done = process_pending(self.deps)
        self.drain()
        return done

    def run_due(self) -> None:
        """What beat would do now: enqueue every due step, then run them."""
        from orchestrator.saga.sweeps import sweep_due

        sweep_due(self.deps)
        self.drain()


def sandbox_mode(url: str, mode: str) -> None:
    """``strict``: cancel only AUTHORIZED orders, unpaid payments expire, a repeated reference in
    progress answers 409 and once done 422 DUPLICATE_REQUEST, as Plural documents, a second
    Generate OTP answers 422 OTP_ALREADY_GENERATED. ``lenient``: cancels anything, nothing
    expires, a repeated reference is answered with what it made (the SDK's reading), a second
    Generate OTP sends a fresh OTP: the saga is tested against both."""
    strict = mode == "strict"
    requests.put(url + "/sandbox/config", json={"strict": strict, "payment_expiry_seconds": 900.0 if strict else 0.0,
                                                "duplicates": "refuse" if strict else "replay",
                                                "second_generate_otp": "refuse" if strict else "resend"},
                 timeout=5).raise_for_status()


@pytest.fixture(params=["strict", "lenient"])
def harness(request: Any, tmp_path: Any, sandbox: ThreadedUvicorn, sandbox_settings: Settings) -> Iterator[Harness]:
    """The saga over SQLite, the vault and the sandbox; every test runs against the strict and the
    lenient sandbox."""
    sandbox_mode(sandbox.url, request.param)
    h = make_harness(f"sqlite:///{tmp_path / 'saga.db'}", sandbox, sandbox_settings, tmp_path / "saga.db")
    h.mode = request.param
    yield h
    sandbox_mode(sandbox.url, "strict")


def make_harness(url: str, sandbox: ThreadedUvicorn, sandbox_settings: Settings, db_path: Any = None) -> Harness:
    import fakeredis

    from orchestrator.store.database import make_engine
    from orchestrator.store.migrate import upgrade
    from orchestrator.store.repo import Repo
    from orchestrator.plural import PluralClient
    from orchestrator.merchant.service import CheckoutService
    from orchestrator.saga.deps import Deps
    from orchestrator.store.vault import Vault

    upgrade(url)
    settings = sandbox_settings.model_copy(update={
        "plural_api_base": sandbox.url, "poll_schedule": "0.01", "step_lease_seconds": 30.0,
        "retry_backoff_base": 0.01, "retry_backoff_cap": 0.05, "step_chain": 0})
    clock = Clock()
    redis = fakeredis.FakeRedis()
    # the harness's clock moves on without real time passing: no pause between token calls refused
    plural = PluralClient.from_settings(settings, redis=redis, backoff_base=0.01, backoff_cap=0.05, read_timeout=3.0,
                                        token_refusal_cooldown=0.0)
    queue: list = []
    repo = Repo(make_engine(url), clock=clock)
    vault = Vault(redis, settings.card_encryption_key.get_secret_value())
    enqueue = lambda step, checkout_id: queue.append((step, checkout_id))  # noqa: E731
    deps = Deps(settings=settings, repo=repo, plural=plural, vault=vault, enqueue=enqueue, clock=clock)
    service = CheckoutService(deps)
    return Harness(deps, service, clock, sandbox.url, db_path, redis, queue)


# --- a throwaway PostgreSQL server, when this machine has one --------------------------

def _postgres_or_skip() -> Iterator[Any]:
    from devkit.pg_server import NoPostgres, throwaway_postgres_server

    try:
        server = throwaway_postgres_server()
        running = server.__enter__()
    except NoPostgres as exc:
        pytest.skip(str(exc))
    try:
        yield running
    finally:
        server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    for server in _postgres_or_skip():
        yield server.url


@pytest.fixture
def real_redis(tmp_path: Any) -> Iterator[Any]:
    """A real Redis server of the test's own (the embedded one: ``.url``, ``.stop()``)."""
    from devkit.redis_server import EmbeddedRedis, free_port

    server = EmbeddedRedis(free_port(), tmp_path, persistent=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A fresh database of its own on the session's PostgreSQL server."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def pg(pg_url: str, sandbox: ThreadedUvicorn, sandbox_settings: Settings) -> Iterator[Harness]:
    """The harness over PostgreSQL, against the strict sandbox."""
    sandbox_mode(sandbox.url, "strict")
    h = make_harness(pg_url, sandbox, sandbox_settings)
    h.mode = "strict"
    yield h


@pytest.fixture
def postgres_server() -> Iterator[Any]:
    """A server of the test's own, which it may crash and restart."""
    yield from _postgres_or_skip()

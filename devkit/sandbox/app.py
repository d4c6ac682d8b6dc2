"""The sandbox gateway over HTTP: Plural UAT's paths, plus ``/sandbox/*`` for the ACS page and tests.
The routes live in ``routes/`` (Plural's API, the bank's page, the controls), what they share in ``http``."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI
import structlog

from devkit.sandbox.faults import Faults
from devkit.sandbox.gateway import Gateway, SandboxConfig
from devkit.sandbox.http import add_middleware
from devkit.sandbox.routes import acs, admin, plural
from devkit.sandbox.webhooks import WebhookSender

log = structlog.get_logger(__name__)


class StateKeeper:
    """Saves the gateway's durable state to a file when it changed (atomically), and restores it."""

    def __init__(self, gateway: Gateway, path: Path, every: float = 1.0):
        self.gateway, self.path, self.every = gateway, Path(path), every
        self.saved = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.path.exists():
            self.saved = self.path.read_bytes()
            gateway.restore(self.saved)

    def save(self) -> None:
        blob = self.gateway.snapshot()
        if blob == self.saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_bytes(blob)
        os.replace(partial, self.path)
        self.saved = blob

    def _run(self) -> None:
        pause = self.every
        while not self._stop.wait(pause):
            started = time.perf_counter()
            try:
                self.save()
            except Exception as exc:  # a full disk must not stop the gateway
                log.warning("sandbox.state_not_saved", error=type(exc).__name__)
            # a big state takes long to serialize (under the gateway's lock): save it less often,
            # so that saving never takes more than a twentieth of the time
            pause = max(self.every, 20 * (time.perf_counter() - started))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sandbox-state", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.save()



def create_app(config: SandboxConfig | None = None, *, faults: Faults | None = None, webhook_url: str | None = None,
               webhook_key: bytes = b"sandbox-webhook-secret", webhook_schedule: str = "plural",
               webhook_time_scale: float = 1 / 600, webhook_timestamps: str = "original",
               admin_key: str = "sandbox-admin-key", state_file: Path | None = None) -> FastAPI:
    """``state_file``: where the sandbox keeps its orders, payments and ledger across restarts
    (saved within a second of a change, and at shutdown; restored at start). ``webhook_*``: the
    retry schedule, its compression and the timestamps of retries (``sandbox.webhooks``)."""
    config = config or SandboxConfig()
    faults = faults or Faults()
    sender = WebhookSender(webhook_url, webhook_key, faults, schedule=webhook_schedule,
                           time_scale=webhook_time_scale, timestamps=webhook_timestamps)
    gateway = Gateway(config, emit=sender.send)
    keeper = StateKeeper(gateway, state_file) if state_file is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if keeper is not None:
            keeper.start()
        yield
        sender.close()
        if keeper is not None:
            keeper.stop()

    app = FastAPI(title="Plural sandbox gateway", version="1", docs_url="/sandbox/docs",
                  openapi_url="/sandbox/openapi.json", lifespan=lifespan)
    app.state.gateway, app.state.faults, app.state.webhooks = gateway, faults, sender
    add_middleware(app, gateway, faults, admin_key)
    plural.add_routes(app, gateway)
    acs.add_routes(app, gateway)
    admin.add_routes(app, gateway, faults, sender, config)
    return app

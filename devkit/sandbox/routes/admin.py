"""The sandbox's own paths, for tests and demos: health, the ledger, webhooks sent, and the controls
(faults, config, the offer book, the clock, tokens, reset; these want ``X-Sandbox-Key``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request

from devkit.sandbox import offers
from devkit.sandbox.faults import Faults
from devkit.sandbox.gateway import Gateway, GatewayError, SandboxConfig
from devkit.sandbox.http import read_body
from devkit.sandbox.webhooks import SCHEDULES, TIMESTAMPS, WebhookSender


def add_routes(app: FastAPI, gateway: Gateway, faults: Faults, sender: WebhookSender, config: SandboxConfig) -> None:
    # --- for tests and demos ------------------------------------------------------------

    @app.get("/sandbox/health")
    async def health() -> Any:
        return {"status": "ok", "orders": len(gateway.orders), "webhooks_pending": sender.pending(),
                "duplicates_refused": gateway.duplicates_refused, "webhooks_late": sender.late}

    @app.get("/sandbox/ledger")
    async def ledger(request: Request) -> Any:
        """Every money movement, or (``?order_id=…``, repeatable) those of the orders named."""
        return {"entries": gateway.ledger_view(request.query_params.getlist("order_id") or None)}

    @app.get("/sandbox/webhooks")
    async def webhooks() -> Any:
        return {"deliveries": sender.view(), "pending": sender.pending()}

    @app.get("/sandbox/faults")
    async def get_faults() -> Any:
        return faults.to_dict()

    @app.put("/sandbox/faults")
    async def put_faults(request: Request) -> Any:
        try:
            faults.replace(await read_body(request))
        except (TypeError, ValueError) as exc:
            raise GatewayError(400, "INVALID_REQUEST", f"bad fault set: {exc}") from None
        return faults.to_dict()

    @app.delete("/sandbox/faults")
    async def clear_faults() -> Any:
        faults.clear()
        return faults.to_dict()

    @app.get("/sandbox/config")
    async def get_config() -> Any:
        data = {k: v for k, v in asdict(config).items() if k not in ("callback_key", "client_secret", "offers")}
        return {**data, "webhook_url": sender.url, "webhook_schedule": sender.schedule,
                "webhook_time_scale": sender.time_scale, "webhook_timestamps": sender.timestamps}

    @app.put("/sandbox/config")
    async def put_config(request: Request) -> Any:
        body = await read_body(request)
        if "webhook_url" in body:
            sender.url = body.pop("webhook_url") or None
        scale = body.get("webhook_time_scale", 1.0)
        if body.get("webhook_schedule", "plural") not in SCHEDULES or body.get("webhook_timestamps", "fresh") \
                not in TIMESTAMPS or isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            raise GatewayError(400, "INVALID_REQUEST", f"webhook_schedule is one of {sorted(SCHEDULES)}, "
                               f"webhook_timestamps one of {list(TIMESTAMPS)}, webhook_time_scale a number >= 0")
        for key in ("webhook_schedule", "webhook_timestamps", "webhook_time_scale"):
            if key in body:
                setattr(sender, key.removeprefix("webhook_"), body.pop(key))
        for key, value in body.items():
            if key in ("callback_key", "client_id", "client_secret", "offers") or not hasattr(config, key):
                raise GatewayError(400, "INVALID_REQUEST", f"{key} cannot be set")
            if not isinstance(value, type(getattr(config, key))) and not (
                    isinstance(value, int) and isinstance(getattr(config, key), float)):
                raise GatewayError(400, "INVALID_REQUEST", f"{key} has the wrong type")
            setattr(config, key, value)
        return await get_config()

    @app.get("/sandbox/offers")
    async def get_offers() -> Any:
        return config.offers.model_dump(mode="json")

    @app.put("/sandbox/offers")
    async def put_offers(request: Request) -> Any:
        body = await read_body(request)
        try:
            config.offers = offers.OfferBook.model_validate(body) if body else offers.DEFAULT_BOOK
        except ValueError as exc:
            raise GatewayError(400, "INVALID_REQUEST", f"offer book: {exc}") from None
        return await get_offers()

    @app.post("/sandbox/clock")
    async def advance_clock(request: Request) -> Any:
        body = await read_body(request)
        seconds = body.get("advance")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise GatewayError(400, "INVALID_REQUEST", "advance must be a number of seconds >= 0")
        return {"offset": gateway.advance_clock(float(seconds))}

    @app.delete("/sandbox/clock")
    async def reset_clock() -> Any:
        gateway.reset_clock()
        return {"offset": 0.0}

    @app.post("/sandbox/tokens/expire")
    async def expire_tokens() -> Any:
        gateway.expire_tokens()
        return {"expired": True}

    @app.post("/sandbox/tokens/refuse")
    async def refuse_credentials(request: Request) -> Any:
        """A rotated secret: issued tokens stop working and the token call answers 422 for
        ``seconds`` (or until ``DELETE``)."""
        body = await read_body(request)
        seconds = body.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0):
            raise GatewayError(400, "INVALID_REQUEST", "seconds must be a number >= 0, or absent (until DELETE)")
        gateway.refuse_credentials(None if seconds is None else float(seconds))
        return {"refusing": True, "seconds": seconds}

    @app.delete("/sandbox/tokens/refuse")
    async def accept_credentials() -> Any:
        gateway.accept_credentials()
        return {"refusing": False}

    @app.post("/sandbox/reset")
    async def reset() -> Any:
        gateway.reset()
        faults.clear()
        config.offers = offers.DEFAULT_BOOK
        return {"reset": True}

"""A sandbox gateway that behaves like Plural UAT (in the spirit of stripe-mock), for development,
demos and tests with no network."""

from __future__ import annotations

from typing import Any

from devkit.sandbox.faults import Faults


def app_from_settings(settings: Any, *, port: int, host: str = "127.0.0.1", faults: Faults | None = None,
                      webhook_url: str | None = None, state_file: Any = None) -> Any:
    """The sandbox app wired from ``config.Settings`` (credentials, secrets, OTP rules)."""
    from devkit.sandbox.app import create_app
    from devkit.sandbox.gateway import SandboxConfig
    from devkit.sandbox.signing import secret_from_hex

    from devkit.sandbox import offers

    public = settings.sandbox_public_url or f"http://{host}:{port}"
    book = offers.DEFAULT_BOOK
    if settings.sandbox_offers_file:
        with open(settings.sandbox_offers_file, encoding="utf-8") as f:
            book = offers.OfferBook.model_validate_json(f.read())
    config = SandboxConfig(
        client_id=settings.plural_client_id,
        client_secret=settings.plural_client_secret.get_secret_value(),
        callback_key=secret_from_hex(settings.plural_callback_secret.get_secret_value()),
        public_url=public,
        otp_resend_after=settings.sandbox_otp_resend_after,
        otp_resend_limit=settings.sandbox_otp_resend_limit,
        otp_max_attempts=settings.sandbox_otp_max_attempts,
        second_generate_otp=settings.sandbox_second_generate_otp,
        token_expiry=settings.sandbox_token_expiry,
        strict=settings.sandbox_strict,
        duplicates=settings.sandbox_duplicates,
        payment_expiry_seconds=settings.sandbox_payment_expiry_seconds,
        offers=book,
    )
    return create_app(config, faults=faults, webhook_url=webhook_url or settings.sandbox_webhook_url,
                      webhook_key=settings.webhook_key(), admin_key=settings.sandbox_admin_key.get_secret_value(),
                      webhook_schedule=settings.sandbox_webhook_schedule,
                      webhook_time_scale=settings.sandbox_webhook_time_scale,
                      webhook_timestamps=settings.sandbox_webhook_timestamps,
                      state_file=state_file)

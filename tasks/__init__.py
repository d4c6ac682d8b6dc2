"""Celery tasks: thin wrappers that take a checkout id and run one saga step.

The message carries the checkout id only: never card data, never an OTP.
"""

from __future__ import annotations

from typing import Any

import structlog

from orchestrator.domain.saga import Step
from workers.celery_app import app


def _run(step: Step, checkout_id: str, task_id: str | None) -> None:
    from orchestrator.saga import runner
    from orchestrator.entrypoints.runtime import get_runtime

    structlog.contextvars.bind_contextvars(saga_id=checkout_id, step=step.value)
    runner.run(get_runtime().deps(), step, checkout_id, task_id)


def _step_task(step: Step) -> Any:
    @app.task(name=f"tasks.{step.value}", bind=True, acks_late=True)
    def task(self: Any, checkout_id: str) -> None:
        _run(step, checkout_id, self.request.id)

    return task


check_offer = _step_task(Step.CHECK_OFFER)
create_order = _step_task(Step.CREATE_ORDER)
card_details = _step_task(Step.CARD_DETAILS)
create_payment = _step_task(Step.CREATE_PAYMENT)
generate_otp = _step_task(Step.GENERATE_OTP)
submit_otp = _step_task(Step.SUBMIT_OTP)
resend_otp = _step_task(Step.RESEND_OTP)
poll_order = _step_task(Step.POLL_ORDER)
cancel_order = _step_task(Step.CANCEL_ORDER)
capture_order = _step_task(Step.CAPTURE_ORDER)
expire_hold = _step_task(Step.EXPIRE_HOLD)


@app.task(name="tasks.refund", bind=True, acks_late=True)
def refund(self: Any, refund_id: str) -> None:
    from orchestrator.saga.steps.refund import run_refund
    from orchestrator.entrypoints.runtime import get_runtime

    structlog.contextvars.bind_contextvars(refund_id=refund_id, step="refund")
    run_refund(get_runtime().deps(), refund_id, self.request.id)


@app.task(name="tasks.sweep_due", acks_late=True, ignore_result=True)
def sweep_due() -> int:
    from orchestrator.entrypoints.runtime import get_runtime
    from orchestrator.saga.sweeps import sweep_due as sweep
    from orchestrator.inbound.webhooks import retry_deferred

    from orchestrator.outbound.delivery import any_due

    rt = get_runtime()
    if retry_deferred(rt.deps()):
        process_webhooks.delay()
    if (rt.settings.merchant_webhook_url or rt.settings.merchant_events_task) and any_due(rt.repo, rt.repo.clock()):
        rt.kick_events()
    return sweep(rt.deps())


@app.task(name="tasks.process_webhooks", acks_late=True, ignore_result=True)
def process_webhooks() -> int:
    from orchestrator.entrypoints.runtime import get_runtime
    from orchestrator.inbound.webhooks import process_pending

    rt = get_runtime()
    return process_pending(rt.deps(), rt.redis, batch=rt.settings.sweep_batch)


@app.task(name="tasks.deliver_events", acks_late=True, ignore_result=True)
def deliver_events() -> int:
    """The outbox to the merchant's backend (``orchestrator.outbound.delivery``), on its own queue."""
    from orchestrator.outbound.delivery import KICK_KEY, deliver_due
    from orchestrator.entrypoints.runtime import get_runtime

    rt = get_runtime()
    return deliver_due(rt.repo, rt.settings, send_task=lambda name, event: app.send_task(name, args=[event]),
                       before_last_look=lambda: rt.redis.delete(KICK_KEY))


@app.task(name="tasks.refresh_token", acks_late=True, ignore_result=True)
def refresh_token() -> None:
    from orchestrator.entrypoints.runtime import get_runtime

    get_runtime().plural.requestor.tokens.get()

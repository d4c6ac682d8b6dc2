"""The saga's steps, one file each: which function runs which step (``STEPS``). The refund step
runs by a refund's id (``orchestrator.saga.runner.run``)."""

from __future__ import annotations

from typing import Callable

from orchestrator.domain.saga import Step
from orchestrator.saga.deps import Deps
from orchestrator.saga.engine import Run
from orchestrator.saga.steps.cancel import cancel_order, expire_hold
from orchestrator.saga.steps.capture import capture_order
from orchestrator.saga.steps.card import card_details
from orchestrator.saga.steps.offer import check_offer
from orchestrator.saga.steps.order import create_order
from orchestrator.saga.steps.otp import generate_otp, resend_otp, submit_otp
from orchestrator.saga.steps.payment import create_payment
from orchestrator.saga.steps.poll import poll_order
from orchestrator.store.models import Checkout

STEPS: dict[Step, Callable[[Deps, Run, Checkout], None]] = {
    Step.CHECK_OFFER: check_offer,
    Step.CREATE_ORDER: create_order,
    Step.CARD_DETAILS: card_details,
    Step.CREATE_PAYMENT: create_payment,
    Step.GENERATE_OTP: generate_otp,
    Step.SUBMIT_OTP: submit_otp,
    Step.RESEND_OTP: resend_otp,
    Step.POLL_ORDER: poll_order,
    Step.CANCEL_ORDER: cancel_order,
    Step.CAPTURE_ORDER: capture_order,
    Step.EXPIRE_HOLD: expire_hold,
}

"""Route one step message to the code that runs it: a checkout's step, or a refund (whose message
carries a refund id). Celery's tasks and the test harness both enter here."""

from __future__ import annotations

from orchestrator.saga import steps
from orchestrator.domain.saga import Step
from orchestrator.saga.refunds import run_refund
from orchestrator.saga.steps import Deps


def run(d: Deps, step: Step, row_id: str, task_id: str | None = None) -> None:
    if step is Step.REFUND:
        run_refund(d, row_id, task_id)
    else:
        steps.run(d, step, row_id, task_id)

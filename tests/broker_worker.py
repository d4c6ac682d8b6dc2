"""A probe task on the project's own Celery app, for tests that run a real worker process
(``celery -A tests.broker_worker worker -Q probe``): each run appends a line to a file."""

from __future__ import annotations

import time
from pathlib import Path

from workers.celery_app import app


@app.task(name="tests.probe", acks_late=True)
def probe(path: str, tag: str, seconds: float = 0.0) -> None:
    time.sleep(seconds)
    with Path(path).open("a") as out:
        out.write(tag + "\n")

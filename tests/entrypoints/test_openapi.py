"""``schemathesis run --checks all`` against the merchant API's own OpenAPI document, over a real
HTTP server, with and without the API key: no 5xx and no undocumented answer (issue 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.entrypoints.api.app import create_app
from orchestrator.store.idempotency import IdempotencyStore
from tests.conftest import ThreadedUvicorn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(harness):
    app = create_app(lambda: harness.service, "st-key", lambda: harness.inbound,
                     idempotency=IdempotencyStore(harness.deps.repo))
    with ThreadedUvicorn(app) as server:
        yield server


@pytest.mark.timeout(300)
@pytest.mark.parametrize("key", [True, False], ids=["with-key", "without-key"])
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(served, harness, key):
    if harness.mode != "strict":
        pytest.skip("the API does not depend on the sandbox's mode")
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{served.url}/openapi.json",
               "--checks", "all", "--max-examples", "25", "--no-color", "--seed", "1"]
    if key:
        command += ["-H", "X-API-Key: st-key"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    if done.returncode != 0:
        Path(ROOT / "var").mkdir(exist_ok=True)
        (ROOT / "var" / f"schemathesis-{'key' if key else 'nokey'}.txt").write_text(done.stdout)
    assert done.returncode == 0, done.stdout[-4000:]

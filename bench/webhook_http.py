"""Webhook ingestion over HTTP against the bare endpoint, with one load generator, in one run.

Starts a real stack (embedded Redis, sandbox, API, worker, beat) and, beside it, the bare
endpoint: a FastAPI app under the same uvicorn settings whose one route does one Redis LPUSH of
the body and answers 200 — what receiving a webhook costs with none of our code. The same load
generator (C threads, each with its own keep-alive connection) then alternates rounds of N
signed Plural webhooks (``ORDER_PROCESSED`` for orders of finished checkouts and for unknown
orders, half each) against the API's ``POST /webhooks/plural`` and the same bodies against the
bare endpoint, and prints deliveries per second, p95 latency, and the API's rate as a ratio of the
bare one.

    .venv/bin/python bench/webhook_http.py [--deliveries 3000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


if os.environ.get("BARE_REDIS_URL"):  # imported by uvicorn as the bare endpoint
    import redis.asyncio as aioredis
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    bare_app = FastAPI()
    _bare_redis = aioredis.Redis.from_url(os.environ["BARE_REDIS_URL"])

    @bare_app.post("/webhooks/plural")
    async def receive(request: Request) -> JSONResponse:
        await _bare_redis.lpush("bare:webhooks", await request.body())
        return JSONResponse({"received": True, "duplicate": False})


def _wait_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def drive(url: str, deliveries: list[tuple[bytes, dict[str, str]]], concurrency: int) -> tuple[float, float]:
    """(deliveries per second, p95 seconds) for posting every delivery to ``url``."""
    local = threading.local()

    def one(delivery: tuple[bytes, dict[str, str]]) -> float:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body, headers = delivery
        started = time.perf_counter()
        answer = local.session.post(url, data=body, headers={**headers, "content-type": "application/json"},
                                    timeout=30)
        assert answer.status_code == 200, (answer.status_code, answer.text[:200])
        return time.perf_counter() - started

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, deliveries))
    elapsed = time.perf_counter() - started
    return len(deliveries) / elapsed, latencies[int(len(latencies) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from config import Settings
    from orchestrator.telemetry.logs import configure_logging
    from devkit.merchant_client import OrchestratorClient
    from orchestrator.plural.signatures import webhook_headers
    from devkit.redis_server import free_port
    from devkit.stack import Stack

    configure_logging("WARNING", "console")
    base = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    stack = Stack(data_dir=base / "var", api_port=free_port(), sandbox_port=free_port(), redis_port=free_port(),
                  log_dir=base / "logs", env={"LOG_LEVEL": "WARNING"})
    stack.start()
    bare = None
    try:
        settings = Settings()
        api = OrchestratorClient(stack.api_url, settings.orchestrator_api_key.get_secret_value(), timeout=30)
        card = {"number": "4012001037141112", "name": "Bench", "cvv": "123", "expiry_month": "12",
                "expiry_year": "2030"}
        finished = []
        for _ in range(20):  # checkouts whose orders the webhooks name
            c = api.create_checkout(amount=10000, card=card)
            api.wait(c["id"], {"AWAITING_OTP"}, timeout=60)
            api.submit_otp(c["id"], "123456")
            finished.append(api.wait(c["id"], {"COMPLETED"}, timeout=60)["plural_order_id"])
        port = free_port()
        env = {**os.environ, **stack.child_env(), "BARE_REDIS_URL": str(stack.redis_url).rsplit("/", 1)[0] + "/14",
               "PYTHONPATH": str(ROOT)}
        bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.webhook_http:bare_app", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning", "--no-access-log",
                                 "--timeout-keep-alive", "75", "--backlog", "4096"], env=env, cwd=ROOT)
        _wait_up(f"http://127.0.0.1:{port}/docs")
        key = settings.webhook_key()

        def deliveries() -> list[tuple[bytes, dict[str, str]]]:
            out = []
            for i in range(args.deliveries):
                order = finished[i % len(finished)] if i % 2 else f"v1-unknown-{uuid.uuid4().hex[:12]}"
                body = json.dumps({"event_type": "ORDER_PROCESSED", "data": {
                    "order_id": order, "status": "PROCESSED", "payments": []}}).encode()
                out.append((body, webhook_headers(key, f"msg_{uuid.uuid4().hex}", int(time.time()), body)))
            return out

        ours: list[tuple[float, float]] = []
        theirs: list[tuple[float, float]] = []
        drive(f"{stack.api_url}/webhooks/plural", deliveries()[:200], args.concurrency)  # warm both
        drive(f"http://127.0.0.1:{port}/webhooks/plural", deliveries()[:200], args.concurrency)
        for _ in range(args.rounds):
            theirs.append(drive(f"http://127.0.0.1:{port}/webhooks/plural", deliveries(), args.concurrency))
            ours.append(drive(f"{stack.api_url}/webhooks/plural", deliveries(), args.concurrency))
        bare_rate, api_rate = statistics.mean(r for r, _ in theirs), statistics.mean(r for r, _ in ours)
        print(f"webhook ingestion over HTTP, {args.deliveries} signed deliveries x {args.rounds} alternating rounds, "
              f"{args.concurrency} connections, {os.cpu_count()} CPUs")
        print(f"  bare endpoint (one LPUSH)   {bare_rate:7.0f} deliveries/s   p95 {max(p for _, p in theirs) * 1000:6.1f} ms")
        print(f"  POST /webhooks/plural       {api_rate:7.0f} deliveries/s   p95 {max(p for _, p in ours) * 1000:6.1f} ms"
              f"   ratio {api_rate / bare_rate:.2f}")
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        stack.stop()


if __name__ == "__main__":
    main()

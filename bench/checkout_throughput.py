"""Checkouts per second and latency through the whole stack, and the worker's memory.

Starts a real stack (embedded Redis, SQLite, sandbox, API, one worker, beat) in a temporary
directory, drives N native-OTP checkouts from C concurrent customers (create → wait for the OTP
step → submit → wait for COMPLETED), and prints throughput, latency percentiles, and the worker's
resident memory before and after. Optional sandbox latency shows how many checkouts one worker
keeps in flight while each waits on the gateway.

    .venv/bin/python bench/checkout_throughput.py [--checkouts 200] [--concurrency 32] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import os
import concurrent.futures as cf
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests

from config.settings import SANDBOX_ADMIN_KEY


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkouts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added sandbox latency per call")
    args = parser.parse_args()

    from config import Settings
    from orchestrator.logs import configure_logging
    from orchestrator.merchant_client import OrchestratorClient
    from orchestrator.redis_server import free_port
    from orchestrator.stack import Stack

    configure_logging("WARNING", "console")
    base = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = Stack(data_dir=base / "var", api_port=free_port(), sandbox_port=free_port(), redis_port=free_port(),
                  log_dir=base / "logs", env={"SWEEP_INTERVAL": "1", "POLL_SCHEDULE": "1,2", "LOG_LEVEL": "WARNING",
                                              "WORKER_CONCURRENCY": os.environ.get("WORKER_CONCURRENCY", "32")})
    stack.start()
    try:
        if args.latency_ms:
            requests.put(f"{stack.sandbox_url}/sandbox/faults", headers={"X-Sandbox-Key": SANDBOX_ADMIN_KEY}, json={"rules": [
                {"kind": "latency", "path": "^/api/", "seconds": args.latency_ms / 1000}]}, timeout=5)
        api = OrchestratorClient(stack.api_url, Settings().orchestrator_api_key.get_secret_value(), timeout=30)
        worker = stack.processes["worker"].pid
        time.sleep(1.0)
        rss_before = rss_mb(worker)
        card = {"number": "4012001037141112", "name": "Bench", "cvv": "123", "expiry_month": "12",
                "expiry_year": "2030"}

        def one(_: int) -> float:
            started = time.perf_counter()
            c = api.create_checkout(amount=10000, card=card, merchant_order_reference=f"b-{uuid.uuid4().hex[:16]}")
            api.wait(c["id"], {"AWAITING_OTP"}, timeout=120, interval=0.25)
            api.submit_otp(c["id"], "123456")
            done = api.wait(c["id"], {"COMPLETED", "FAILED"}, timeout=120, interval=0.25)
            assert done["status"] == "COMPLETED", done["status"]
            return time.perf_counter() - started

        started = time.perf_counter()
        with cf.ThreadPoolExecutor(args.concurrency) as pool:
            latencies = sorted(pool.map(one, range(args.checkouts)))
        elapsed = time.perf_counter() - started
        rss_after = rss_mb(worker)
        q = statistics.quantiles(latencies, n=100)
        print(f"{args.checkouts} native-OTP checkouts, {args.concurrency} concurrent customers, "
              f"sandbox latency {args.latency_ms:g} ms per call, 1 worker (32 threads), SQLite")
        print(f"  throughput  {args.checkouts / elapsed:7.1f} checkouts/s   ({elapsed:.1f} s in all)")
        print(f"  latency     p50 {q[49]:.2f} s   p95 {q[94]:.2f} s   max {latencies[-1]:.2f} s")
        print(f"  worker RSS  {rss_before:.0f} MB before, {rss_after:.0f} MB after")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()

"""Checkouts per second against the architecture's floor, in one run, alternating.

For each configuration (SQLite or a throwaway PostgreSQL; 0 or 200 ms per gateway call; one or two
worker processes) it starts a real stack (embedded Redis, sandbox, API, worker(s), beat) and the
floor's worker (``bench/floor.py``: a bare chain of as many Celery hops as a checkout has, each
one sandbox call and one write, same pool, Redis and database), then alternates rounds of the
floor and of N native-OTP checkouts driven through the API by C concurrent customers (create →
wait for the OTP step → submit → wait for COMPLETED, waiting with the API's long poll). It prints each rate, p95 end-to-end latency,
and the project's rate as a ratio of the floor's measured in the same run; and the worker's memory.

Scaling is shown where the workers are the limit: at 200 ms per call a worker of 16 threads can
carry at most 16 / (6 × 0.2 s) ≈ 13 checkouts a second, so with 64 customers a second worker of
16 threads should carry as many again, short of the machine's CPU. With two workers, rounds of
the first worker alone (the others told to stop consuming, by Celery's remote control) alternate
with rounds of both in the same stack, and it prints how many times the rate of one two give.
At 0 ms on two cores every process shares the CPU, which is the limit, and it prints that too.
A latency's cost is measured the same way: rounds at 0 ms alternate with rounds at 200 ms.

    .venv/bin/python bench/checkout_throughput.py [--checkouts 150] [--concurrency 32] [--rounds 2]
        [--configs sqlite:0:1,sqlite:200:1:96,postgres:0:1,postgres:200:1:96,postgres:200:1:64:16,...]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.floor import HOPS, FloorWorker, Run, run_floor  # noqa: E402
from config.settings import SANDBOX_ADMIN_KEY  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_checkouts(api: Any, checkouts: int, concurrency: int) -> Run:
    card = {"number": "4012001037141112", "name": "Bench", "cvv": "123", "expiry_month": "12", "expiry_year": "2030"}

    def one(_: int) -> float:
        started = time.perf_counter()
        c = api.create_checkout(amount=10000, card=card, merchant_order_reference=f"b-{uuid.uuid4().hex[:16]}")
        api.wait(c["id"], {"AWAITING_OTP"}, timeout=120, current=c)
        submitted = api.submit_otp(c["id"], "123456")
        done = api.wait(c["id"], {"COMPLETED", "FAILED"}, timeout=120, current=submitted)
        assert done["status"] == "COMPLETED", done["status"]
        return time.perf_counter() - started

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(checkouts)))
    return Run("project", checkouts, time.perf_counter() - started, latencies)


@contextlib.contextmanager
def database(kind: str, base: Path) -> Iterator[tuple[str, str]]:
    """(the project's URL, the floor's URL) on the same kind of database."""
    if kind == "sqlite":
        yield f"sqlite:///{base / 'var' / 'orchestrator.store'}", f"sqlite:///{base / 'floor.db'}"
        return
    from devkit.pg_server import throwaway_postgres

    with throwaway_postgres() as url:
        yield url, url


class Others:
    """The stack's workers other than the first: stop and restart their consuming of the saga queue
    (Celery's remote control), so one and several workers are measured alternately in one stack."""

    def __init__(self, stack: Any) -> None:
        from celery import Celery

        self.control = Celery(broker=str(stack.redis_url)).control
        first = f"worker-{stack.processes['worker'].pid}@"
        deadline = time.monotonic() + 30
        while True:
            names = [n for reply in self.control.ping(timeout=2) or [] for n in reply]
            self.names = [n for n in names if not n.startswith(first)]
            if len(names) == len(stack.processes) - 3 or time.monotonic() > deadline:  # not api, sandbox, beat
                break
        assert self.names, f"no other worker answered: {names}"

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.control.cancel_consumer("saga", destination=self.names, reply=True)
        try:
            yield
        finally:
            self.control.add_consumer("saga", destination=self.names, reply=True)


def paired(runs: list[Run], against: list[Run]) -> str:
    """The ratio of two kinds of rounds that alternated: the median of each round's ratio to the
    round beside it, and their range. (The machine's speed drifts within seconds; a ratio of
    neighbours cancels the drift that a ratio of means keeps.)"""
    ratios = sorted(r.rate / a.rate for r, a in zip(runs, against))
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"


def measure(kind: str, latency_ms: float, workers: int, in_flight: int, threads: int,
            args: argparse.Namespace) -> float:
    from config import Settings
    from devkit.merchant_client import OrchestratorClient
    from devkit.redis_server import free_port
    from devkit.stack import Stack

    base = Path(tempfile.mkdtemp(prefix="bench-"))
    with database(kind, base) as (project_url, floor_url):
        env = {"SWEEP_INTERVAL": "1", "POLL_SCHEDULE": "1,2", "LOG_LEVEL": "WARNING", "DATABASE_URL": project_url,
               "WORKER_CONCURRENCY": str(threads)}
        stack = Stack(data_dir=base / "var", api_port=free_port(), sandbox_port=free_port(), redis_port=free_port(),
                      log_dir=base / "logs", env=env)
        stack.start()
        try:
            if workers > 1:
                for i in range(2, workers + 1):
                    stack.spawn(f"worker{i}", command="worker")

            def latency(ms: float) -> None:
                rules = [{"kind": "latency", "path": "^/api/", "seconds": ms / 1000}] if ms else []
                requests.put(f"{stack.sandbox_url}/sandbox/faults", headers={"X-Sandbox-Key": SANDBOX_ADMIN_KEY},
                             json={"rules": rules}, timeout=5).raise_for_status()

            latency(latency_ms)
            api = OrchestratorClient(stack.api_url, Settings().orchestrator_api_key.get_secret_value(), timeout=30,
                                     connections=max(64, in_flight))
            worker = stack.processes["worker"].pid
            broker = str(stack.redis_url).rsplit("/", 1)[0] + "/15"
            run_checkouts(api, min(20, args.checkouts), in_flight)  # warm the stack
            rss_before = rss_mb(worker)
            floors: list[Run] = []
            projects: list[Run] = []
            at_zero: list[Run] = []
            alone: list[Run] = []
            others = Others(stack) if workers > 1 else None
            with FloorWorker(broker, stack.sandbox_url, floor_url, stack.child_env(), threads * workers):
                for _ in range(args.rounds):  # enough work for several waves of what is in flight
                    floors.append(run_floor(broker, max(args.chains, 4 * in_flight), in_flight))
                    projects.append(run_checkouts(api, max(args.checkouts, 3 * in_flight), in_flight))
                    if latency_ms and threads == in_flight:  # the same stack without the latency, alternately
                        latency(0)
                        at_zero.append(run_checkouts(api, args.checkouts, args.concurrency))
                        latency(latency_ms)
                    if others is not None:  # the first worker alone, alternately in the same stack
                        with others.paused():
                            alone.append(run_checkouts(api, max(args.checkouts, 3 * in_flight), in_flight))
            rss_after = rss_mb(worker)
        finally:
            stack.stop()
    floor = statistics.mean(r.rate for r in floors)
    project = statistics.mean(r.rate for r in projects)
    label = f"{kind:8} {latency_ms:4.0f} ms  {workers} worker{'s' if workers > 1 else ' '} {in_flight:3d} in flight"
    if threads != in_flight:
        label += f" ({threads} threads each)"
    print(f"{label}  floor {floor:6.1f} chains/s (p95 {max(r.p95 for r in floors):.2f} s)   "
          f"project {project:6.1f} checkouts/s (p95 {max(r.p95 for r in projects):.2f} s)   "
          f"ratio {paired(projects, floors)}   worker RSS {rss_before:.0f}→{rss_after:.0f} MB", flush=True)
    print(f"{'':8} rounds: floor {' '.join(f'{r.rate:.1f}' for r in floors)}, "
          f"project {' '.join(f'{r.rate:.1f}' for r in projects)}", flush=True)
    if at_zero:
        zero = statistics.mean(r.rate for r in at_zero)
        print(f"{'':8} {latency_ms:4.0f} ms keeps {paired(projects, at_zero)} of the 0 ms rate on {kind} "
              f"({zero:.1f} checkouts/s with {args.concurrency} in flight, alternately in the same stack)", flush=True)
    if alone:
        one = statistics.mean(r.rate for r in alone)
        print(f"{'':8} {workers} workers of {threads} threads run ×{paired(projects, alone)} the rate of one on {kind} "
              f"at {latency_ms:.0f} ms ({one:.1f} checkouts/s with the others not consuming, alternately in the same "
              f"stack)", flush=True)
    return project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkouts", type=int, default=150)
    parser.add_argument("--chains", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--configs",
                        default="sqlite:0:1,sqlite:200:1:96,postgres:0:1,postgres:200:1:96,"
                                "postgres:200:2:64:16,postgres:0:2",
                        help="database:latency_ms:workers[:in flight[:threads]], comma-separated (in flight: "
                             "customers, default --concurrency; hiding a latency takes rate × latency in flight, "
                             "by Little's law; threads: each worker's, default in flight)")
    args = parser.parse_args()
    from orchestrator.telemetry.logs import configure_logging

    configure_logging("WARNING", "console")
    print(f"{args.checkouts} native-OTP checkouts ({HOPS} gateway calls, {HOPS} hops) vs {args.chains} floor chains "
          f"of {HOPS} hops, {args.concurrency} in flight, {args.rounds} alternating rounds each; "
          f"{os.cpu_count()} CPUs")
    for config in args.configs.split(","):
        kind, latency, workers, *rest = config.split(":")
        in_flight = int(rest[0]) if rest else args.concurrency
        threads = int(rest[1]) if len(rest) > 1 else in_flight
        measure(kind, float(latency), int(workers), in_flight, threads, args)

if __name__ == "__main__":
    main()

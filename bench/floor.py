"""The floor: what a checkout's shape costs on this architecture with none of our code in it.

A chain of ``HOPS`` Celery tasks (6, as many as a native-OTP checkout's gateway calls and hops),
run by a worker with the same pool and concurrency as ours over the same Redis broker; each task
makes one authenticated call to the sandbox (``getCardDetails``), one database write (SQLite in
WAL mode, or PostgreSQL) and enqueues the next; the last one signals done through Redis.

This module is both the Celery app (the worker imports it: ``celery -A bench.floor worker``) and
the driver (``run_floor``), used by ``bench/checkout_throughput.py``. Alone:

    .venv/bin/python bench/floor.py --chains 200 --concurrency 32
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent import futures as cf
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from celery import Celery
from sqlalchemy import create_engine, event, text

HOPS = 6
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the devkit (stack, embedded Redis) is the repository's, not installed

app = Celery("floor", broker=os.environ.get("FLOOR_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.update(task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
                task_ignore_result=True, task_serializer="json", accept_content=["json"], task_default_queue="floor",
                worker_hijack_root_logger=False, worker_pool="threads",
                worker_concurrency=int(os.environ.get("WORKER_CONCURRENCY", "32")))

_local = threading.local()
_shared: dict[str, Any] = {}
_lock = threading.Lock()


def _engine() -> Any:
    with _lock:
        if "engine" not in _shared:
            url = os.environ["FLOOR_DATABASE_URL"]
            engine = create_engine(url, pool_size=40, max_overflow=0) if url.startswith("postgresql") else \
                create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=40)
            if url.startswith("sqlite"):
                @event.listens_for(engine, "connect")
                def _wal(conn: Any, _record: Any) -> None:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
            with engine.begin() as c:
                c.execute(text("CREATE TABLE IF NOT EXISTS floor_hop (chain VARCHAR(40), hop INTEGER, at FLOAT)"))
            _shared["engine"] = engine
        return _shared["engine"]


def _redis() -> Any:
    import redis

    with _lock:
        if "redis" not in _shared:
            _shared["redis"] = redis.Redis.from_url(os.environ.get("FLOOR_BROKER", "redis://127.0.0.1:6379/15"))
        return _shared["redis"]


def _session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def _token(base: str) -> str:
    with _lock:
        if "token" not in _shared:
            from config import get_settings

            settings = get_settings()
            answer = requests.post(f"{base}/api/auth/v1/token", json={
                "client_id": settings.plural_client_id,
                "client_secret": settings.plural_client_secret.get_secret_value(),
                "grant_type": "client_credentials"}, timeout=10)
            answer.raise_for_status()
            _shared["token"] = answer.json()["access_token"]
        return _shared["token"]


@app.task(name="floor.hop")
def hop(chain: str, n: int) -> None:
    base = os.environ["FLOOR_SANDBOX"]
    answer = _session().post(f"{base}/api/pay/v1/getCardDetails", timeout=30,
                             headers={"Authorization": f"Bearer {_token(base)}"},
                             json={"card_details": [{"payment_identifier": "4012001037141112"}]})
    answer.raise_for_status()
    with _engine().begin() as c:
        c.execute(text("INSERT INTO floor_hop (chain, hop, at) VALUES (:c, :n, :t)"),
                  {"c": chain, "n": n, "t": time.time()})
    if n + 1 < HOPS:
        hop.apply_async((chain, n + 1))
    else:
        _redis().lpush(f"floor:done:{chain}", 1)


# --- the driver ---------------------------------------------------------------------------

@dataclass
class Run:
    name: str
    count: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def p95(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[94] if len(self.latencies) > 1 else self.latencies[0]


class FloorWorker:
    """The floor's worker process, on a given broker, sandbox and database."""

    def __init__(self, broker: str, sandbox: str, database_url: str, env: dict[str, str], concurrency: int = 32):
        self.env = {**os.environ, **env, "FLOOR_BROKER": broker, "FLOOR_SANDBOX": sandbox,
                    "FLOOR_DATABASE_URL": database_url, "WORKER_CONCURRENCY": str(concurrency),
                    "PYTHONPATH": str(ROOT)}
        self.broker = broker
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "FloorWorker":
        self.proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench.floor", "worker", "-l", "WARNING",
                                      "--without-heartbeat", "--without-gossip", "--without-mingle"],
                                     env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=None if os.environ.get("FLOOR_DEBUG") else subprocess.DEVNULL)
        run_floor(self.broker, 2, 2)  # warm: the worker is up and has its token
        return self

    def __exit__(self, *_exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_senders: dict[str, Celery] = {}


def run_floor(broker: str, chains: int, concurrency: int, timeout: float = 120.0) -> Run:
    """``chains`` chains, ``concurrency`` in flight; returns the rate and latencies."""
    import redis

    sender = _senders.get(broker)
    if sender is None:  # one producer per broker: a benchmark run starts several stacks
        sender = _senders[broker] = Celery("floor-driver", broker=broker)
    # one connection per waiting chain, and a socket timeout beyond the BLPOP's (redis-py's
    # defaults, 100 connections and 5 s, would end a long wait or a wide run)
    r = redis.Redis.from_url(broker, socket_timeout=timeout + 10, max_connections=concurrency + 8)

    def one(_: int) -> float:
        chain = uuid.uuid4().hex
        started = time.perf_counter()
        sender.send_task("floor.hop", args=(chain, 0), queue="floor")
        if r.blpop([f"floor:done:{chain}"], timeout=timeout) is None:
            raise TimeoutError(f"chain {chain} did not finish in {timeout} s")
        return time.perf_counter() - started

    started = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(chains)))
    return Run("floor", chains, time.perf_counter() - started, latencies)


def main() -> None:
    import argparse
    import tempfile

    from devkit.stack import Stack
    from devkit.redis_server import free_port

    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="floor-"))
    stack = Stack(data_dir=base / "var", api_port=free_port(), sandbox_port=free_port(), redis_port=free_port(),
                  log_dir=base / "logs", components=("sandbox",), env={"LOG_LEVEL": "WARNING"})
    stack.start()
    try:
        env = stack.child_env()
        broker = f"{stack.redis_url}".rsplit("/", 1)[0] + "/15"
        with FloorWorker(broker, stack.sandbox_url, f"sqlite:///{base / 'floor.db'}", env, args.concurrency):
            got = run_floor(broker, args.chains, args.concurrency)
        print(f"floor: {got.count} chains of {HOPS} hops, {args.concurrency} in flight: {got.rate:.1f} chains/s, "
              f"p95 {got.p95:.2f} s")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()

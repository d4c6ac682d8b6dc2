"""The ``orchestrator`` command: ``up``, ``api``, ``worker``, ``beat``, ``sandbox``, ``migrate``, ``demo``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Sequence

from config import ConfigurationError, load_settings
from orchestrator.logs import configure_logging


def _sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from orchestrator.sandbox import app_from_settings
    from orchestrator.sandbox.faults import simple_faults

    settings = load_settings()
    if settings.plural_env.value != "sandbox":
        print(f"orchestrator sandbox: refused with PLURAL_ENV={settings.plural_env.value}; the sandbox gateway "
              "runs only with PLURAL_ENV=sandbox", file=sys.stderr)
        return 2
    faults = simple_faults(
        latency_ms=args.latency_ms, error_rate=args.error_rate, timeout_rate=args.timeout_rate,
        webhook_drop=args.webhook_drop, webhook_duplicate=args.webhook_duplicate,
        webhook_reorder=args.webhook_reorder, seed=args.seed,
    )
    app = app_from_settings(settings, host=args.host, port=args.port, faults=faults, webhook_url=args.webhook_url)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, timeout_keep_alive=75,
                backlog=4096)
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from orchestrator.api.app import app_from_runtime

    # httptools and uvloop where installed; keep-alive longer than clients' pooled connections idle
    # (a connection the server closes as the client reuses it is a reset), a deep accept backlog
    uvicorn.run(app_from_runtime(), host=args.host, port=args.port, log_config=None, access_log=False,
                http="auto", loop="auto", timeout_keep_alive=75, backlog=4096)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from workers.celery_app import app

    settings = load_settings()
    concurrency = args.concurrency or settings.worker_concurrency
    app.worker_main(["worker", "--pool=threads", f"--concurrency={concurrency}", "--loglevel=INFO", "-Q", "saga,events",
                     "--without-gossip", "--without-mingle", f"--hostname=worker-{os.getpid()}@%h"])
    return 0


def _beat(_args: argparse.Namespace) -> int:
    from workers.celery_app import app

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app.start(["beat", "--loglevel=INFO", "-s", str(settings.data_dir / "celerybeat-schedule")])
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from orchestrator.db.migrate import upgrade

    settings = load_settings()
    deadline = time.monotonic() + args.wait
    while True:
        try:
            upgrade(settings.sqlalchemy_url)
            break
        except OperationalError as exc:  # the database is not answering yet (a container starting)
            if time.monotonic() >= deadline:
                print(f"orchestrator migrate: the database did not answer in {args.wait:g} s: "
                      f"{type(exc.orig).__name__}", file=sys.stderr)
                return 1
            print("orchestrator migrate: waiting for the database…", file=sys.stderr)
            time.sleep(2)
    print("database at head")
    return 0


def _operator(args: argparse.Namespace) -> int:
    from orchestrator.runtime import get_runtime
    from orchestrator.service import CheckoutError

    rt = get_runtime()
    svc = rt.service()
    try:
        c = svc.operator(args.checkout_id, args.action, getattr(args, "outcome", None), who=args.operator)
    except CheckoutError as exc:
        print(f"orchestrator {args.action}: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{c.id}: {c.state}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from orchestrator.stack import Stack

    settings = load_settings()
    stack = Stack(data_dir=settings.data_dir, api_port=args.api_port, sandbox_port=args.sandbox_port,
                  redis_port=args.redis_port, host=args.host, redis_url=settings.redis_url,
                  with_sandbox=settings.plural_env.value == "sandbox")
    stop = {"now": False}
    failed = False

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        lines = [
            f"redis    {stack.redis_url}" + (" (embedded)" if stack.redis else ""),
            f"database {settings.sqlalchemy_url}",
        ]
        if stack.with_sandbox:
            lines.append(f"sandbox  {stack.sandbox_url}  (Plural UAT stand-in; ledger at /sandbox/ledger)")
        lines += [f"api      {stack.api_url}  (OpenAPI at {stack.api_url}/docs)", "worker   celery, thread pool",
                  "beat     due-time sweep every " + f"{settings.sweep_interval:g}s", "Ctrl-C stops everything."]
        print("\n".join(lines), flush=True)
        restarts: dict[str, list[float]] = {}
        while not stop["now"]:
            why = stack.supervise(restarts)
            if why is not None:
                print(f"{why}; stopping everything", file=sys.stderr, flush=True)
                failed = True
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from orchestrator.demo import run_demo

    settings = load_settings()
    return run_demo(api_url=args.api_url, api_key=args.api_key or settings.orchestrator_api_key.get_secret_value(),
                    checkouts=args.checkouts, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sb = sub.add_parser("sandbox", help="run the Plural sandbox gateway")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=8700)
    sb.add_argument("--webhook-url", default=None, help="where to post webhooks (default SANDBOX_WEBHOOK_URL)")
    sb.add_argument("--latency-ms", type=float, default=0.0, help="added latency per call")
    sb.add_argument("--error-rate", type=float, default=0.0, help="share of calls answered 500/503/429")
    sb.add_argument("--timeout-rate", type=float, default=0.0, help="share of calls handled but never answered")
    sb.add_argument("--webhook-drop", type=float, default=0.0)
    sb.add_argument("--webhook-duplicate", type=float, default=0.0)
    sb.add_argument("--webhook-reorder", type=float, default=0.0)
    sb.add_argument("--seed", type=int, default=None, help="random seed for the faults")
    sb.set_defaults(func=_sandbox)

    api = sub.add_parser("api", help="run the merchant API (and webhook receiver)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=_api)

    worker = sub.add_parser("worker", help="run a Celery worker (thread pool, I/O bound)")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.set_defaults(func=_worker)

    sub.add_parser("beat", help="run Celery beat (the due-time sweep); run exactly one").set_defaults(func=_beat)
    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.add_argument("--wait", type=float, default=60.0, help="seconds to keep retrying until the database answers")
    mig.set_defaults(func=_migrate)

    up = sub.add_parser("up", help="start everything on the embedded defaults")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--api-port", type=int, default=8000)
    up.add_argument("--sandbox-port", type=int, default=8700)
    up.add_argument("--redis-port", type=int, default=6390, help="port of the embedded Redis")
    up.set_defaults(func=_up)

    for action in ("retry", "resolve"):
        op = sub.add_parser(action, help=f"{action} a checkout that NEEDS_ATTENTION (recorded in its history)")
        op.add_argument("checkout_id")
        if action == "resolve":
            op.add_argument("--as", dest="outcome", required=True, choices=["COMPLETED", "CANCELLED", "FAILED"])
        op.add_argument("--operator", default=os.environ.get("USER", "operator"), help="who decides (for the history)")
        op.set_defaults(func=_operator, action=action)

    chaos = sub.add_parser("chaos", help="real processes under faults, then the invariants")
    chaos.add_argument("--checkouts", type=int, default=200)
    chaos.add_argument("--seed", type=int, default=1)
    chaos.add_argument("--period", type=float, default=3.0, help="seconds between faults, on average")
    chaos.set_defaults(func=lambda a: __import__("orchestrator.chaos", fromlist=["main"]).main(
        a.checkouts, a.seed, a.period))

    demo = sub.add_parser("demo", help="drive checkouts of every kind through a running stack")
    demo.add_argument("--checkouts", type=int, default=20)
    demo.add_argument("--api-url", default="http://127.0.0.1:8000")
    demo.add_argument("--api-key", default=None, help="default ORCHESTRATOR_API_KEY")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all to finish")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

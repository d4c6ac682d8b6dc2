"""The ``python -m devkit`` command, for development only: up, sandbox, chaos, demo."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Sequence

from config import load_settings
from config.settings import EMBEDDED_REDIS_PORT
from orchestrator.entrypoints.cli import Help, commands, run_command


def _sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from devkit.sandbox import app_from_settings
    from devkit.sandbox.faults import simple_faults

    settings = load_settings()
    if settings.plural_env.value != "sandbox":
        print(f"devkit sandbox: refused with PLURAL_ENV={settings.plural_env.value}; the sandbox gateway "
              "runs only with PLURAL_ENV=sandbox", file=sys.stderr)
        return 2
    faults = simple_faults(
        latency_ms=args.latency_ms, error_rate=args.error_rate, timeout_rate=args.timeout_rate,
        webhook_drop=args.webhook_drop, webhook_duplicate=args.webhook_duplicate,
        webhook_reorder=args.webhook_reorder, seed=args.seed,
    )
    # like Plural, the sandbox does not forget: its orders live in DATA_DIR across restarts
    app = app_from_settings(settings, host=args.host, port=args.port, faults=faults, webhook_url=args.webhook_url,
                            state_file=None if args.forget else settings.data_dir / "sandbox-state.pickle")
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, timeout_keep_alive=75,
                backlog=4096)
    return 0



def _up(args: argparse.Namespace) -> int:
    from devkit.stack import Stack

    settings = load_settings()
    stack = Stack(data_dir=settings.data_dir, api_port=args.api_port, sandbox_port=args.sandbox_port,
                  redis_port=args.redis_port, host=args.host, redis_url=settings.redis_url,
                  with_sandbox=settings.plural_env.value == "sandbox")
    stop = {"now": False}
    failed = False

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)  # the terminal closed: stop everything, as for Ctrl-C
    from devkit.redis_server import port_in_use

    wanted = [(args.api_port, "--api-port")]
    if stack.with_sandbox:
        wanted.append((args.sandbox_port, "--sandbox-port"))
    if settings.redis_url is None:
        wanted.append((args.redis_port, "--redis-port"))
    busy = [(port, flag) for port, flag in wanted if port_in_use(port, args.host if flag != "--redis-port" else
                                                                  "127.0.0.1")]
    if busy:
        for port, flag in busy:
            print(f"devkit up: port {port} is in use (another `up` still running?); stop it, "
                  f"or choose another port with {flag}", file=sys.stderr)
        return 1
    try:
        try:
            stack.start()
        except Exception as exc:  # a child that would not start: say which, stop the rest, fail
            print(f"devkit up: {exc}; stopping everything", file=sys.stderr, flush=True)
            failed = True
            return 1
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
    from devkit.demo import run_demo

    settings = load_settings()
    return run_demo(api_url=args.api_url, api_key=args.api_key or settings.orchestrator_api_key.get_secret_value(),
                    checkouts=args.checkouts, timeout=args.timeout)


def _chaos(args: argparse.Namespace) -> int:
    from devkit.chaos import main as chaos_main

    return int(chaos_main(args.checkouts, args.seed, args.period) or 0)


DESCRIPTION = """Development tools for the Plural orchestrator: the whole stack on the embedded defaults
(`up`: embedded Redis, SQLite, the sandbox gateway, API, worker, beat), the sandbox gateway on its own,
chaos runs and the demo. Not part of the production package; the production command is `orchestrator`."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devkit", description=DESCRIPTION, formatter_class=Help)
    sub = commands(parser)

    sb = sub.add_parser("sandbox", help="run the Plural sandbox gateway")
    sb.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    sb.add_argument("--port", type=int, default=8700, help="port to listen on")
    sb.add_argument("--webhook-url", default=None, help="where to post webhooks (default SANDBOX_WEBHOOK_URL)")
    sb.add_argument("--latency-ms", type=float, default=0.0, help="added latency per call")
    sb.add_argument("--error-rate", type=float, default=0.0, help="share of calls answered 500/503/429")
    sb.add_argument("--timeout-rate", type=float, default=0.0, help="share of calls handled but never answered")
    sb.add_argument("--webhook-drop", type=float, default=0.0, help="share of webhooks never sent")
    sb.add_argument("--webhook-duplicate", type=float, default=0.0, help="share of webhooks sent twice")
    sb.add_argument("--webhook-reorder", type=float, default=0.0, help="share of webhooks held back and sent late")
    sb.add_argument("--seed", type=int, default=None, help="random seed for the faults")
    sb.add_argument("--forget", action="store_true", help="keep nothing across restarts (DATA_DIR/sandbox-state.pickle)")
    sb.set_defaults(func=_sandbox)

    up = sub.add_parser("up", help="start everything on the embedded defaults")
    up.add_argument("--host", default="127.0.0.1", help="interface the API and the sandbox listen on")
    up.add_argument("--api-port", type=int, default=8000, help="port of the merchant API")
    up.add_argument("--sandbox-port", type=int, default=8700, help="port of the sandbox gateway")
    up.add_argument("--redis-port", type=int, default=EMBEDDED_REDIS_PORT, help="port of the embedded Redis")
    up.set_defaults(func=_up)

    chaos = sub.add_parser("chaos", help="real processes under faults, then the invariants")
    chaos.add_argument("--checkouts", type=int, default=200, help="checkouts to drive")
    chaos.add_argument("--seed", type=int, default=1, help="random seed of the faults")
    chaos.add_argument("--period", type=float, default=3.0, help="seconds between faults, on average")
    chaos.set_defaults(func=_chaos)

    demo = sub.add_parser("demo", help="drive checkouts of every kind through a running stack")
    demo.add_argument("--checkouts", type=int, default=20, help="checkouts to drive")
    demo.add_argument("--api-url", default="http://127.0.0.1:8000", help="the running stack's API")
    demo.add_argument("--api-key", default=None, help="default ORCHESTRATOR_API_KEY")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for all to finish")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, "devkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

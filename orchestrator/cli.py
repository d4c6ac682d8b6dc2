"""The ``orchestrator`` command: ``up``, ``api``, ``worker``, ``beat``, ``sandbox``, ``migrate``, ``demo``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from config import ConfigurationError, load_settings
from orchestrator.logs import configure_logging


def _sandbox(args: argparse.Namespace) -> int:
    import uvicorn

    from orchestrator.sandbox import app_from_settings
    from orchestrator.sandbox.faults import simple_faults

    settings = load_settings()
    faults = simple_faults(
        latency_ms=args.latency_ms, error_rate=args.error_rate, timeout_rate=args.timeout_rate,
        webhook_drop=args.webhook_drop, webhook_duplicate=args.webhook_duplicate,
        webhook_reorder=args.webhook_reorder, seed=args.seed,
    )
    app = app_from_settings(settings, host=args.host, port=args.port, faults=faults, webhook_url=args.webhook_url)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0


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

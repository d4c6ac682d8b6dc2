"""The ``orchestrator`` command: api, worker, beat, migrate, status, checkout, retry, resolve,
resolve-refund. The development commands (up, sandbox, chaos, demo) are ``python -m devkit``'s."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Sequence

from config import ConfigurationError, load_settings
from orchestrator.telemetry.logs import configure_logging


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from orchestrator.entrypoints.api.app import app_from_runtime

    # httptools and uvloop where installed; keep-alive longer than clients' pooled connections idle
    # (a connection the server closes as the client reuses it is a reset), a deep accept backlog
    uvicorn.run(app_from_runtime(), host=args.host, port=args.port, log_config=None, access_log=False,
                http="auto", loop="auto", timeout_keep_alive=75, backlog=4096)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from workers.celery_app import app

    settings = load_settings()
    concurrency = args.concurrency or settings.worker_concurrency
    port = os.environ.get("WORKER_METRICS_PORT")
    if port:  # a worker on a host of its own serves its own /metrics
        from prometheus_client import start_http_server

        start_http_server(int(port))
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

    from orchestrator.store.migrate import upgrade

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
    from orchestrator.entrypoints.runtime import get_runtime
    from orchestrator.merchant.errors import CheckoutError

    rt = get_runtime()
    svc = rt.service()
    try:
        c = svc.operator(args.checkout_id, args.action, getattr(args, "outcome", None), who=args.operator)
    except CheckoutError as exc:
        print(f"orchestrator {args.action}: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    note = "  (cancelling at Plural: the cancel step releases the hold; `orchestrator checkout` shows the outcome)"
    print(f"{c.id}: {c.state}{note if c.state == 'CANCELLING' else ''}")
    return 0


def _resolve_refund(args: argparse.Namespace) -> int:
    from orchestrator.merchant.refunds import RefundRefused
    from orchestrator.entrypoints.runtime import get_runtime

    try:
        r = get_runtime().service().resolve_refund(args.refund_id, args.operator)
    except RefundRefused as exc:
        print(f"orchestrator resolve-refund: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(f"{r.id}: {r.state}" + (f" ({r.error_code})" if r.error_code else ""))
    return 0


def _repo() -> object:
    from orchestrator.store.database import make_engine
    from orchestrator.store.repo import Repo

    return Repo(make_engine(load_settings().sqlalchemy_url))


def _reading(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """An operator's read of the database: a database that is not there says so, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import OperationalError

        try:
            return command(args)
        except OperationalError as exc:
            url = load_settings().sqlalchemy_url
            print(f"orchestrator {args.command}: cannot read the database at {url} "
                  f"({str(exc.orig).splitlines()[0]}); start `./run.sh up` (or run `orchestrator migrate`) first, "
                  "or set DATABASE_URL", file=sys.stderr)
            return 1

    return run


def _credentials_flag() -> tuple[float | None, str | None]:
    """The token store's "credentials rejected since" flag, read from Redis: (since, None), or
    (None, why it could not be read)."""
    try:
        import redis

        from orchestrator.plural.token import RedisTokenStore

        settings = load_settings()
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
        store = RedisTokenStore(client, settings.plural_client_id, settings.card_encryption_key.get_secret_value())
        return store.rejected_since(), None
    except Exception as exc:  # the status of the store still prints
        return None, type(exc).__name__


def _status(_args: argparse.Namespace) -> int:
    """Tables of where checkouts stand, what is overdue or stuck and why, failures, the outbox."""
    from rich.console import Console
    from rich.table import Table

    from orchestrator.store import reports
    from orchestrator.store.models import utcnow

    rejected_since, unknown = _credentials_flag()
    o = reports.overview(_repo(), utcnow(), rejected_since=rejected_since)  # type: ignore[arg-type]
    out = Console()
    cred = o["credentials"]
    if cred["rejected"]:
        out.print(f"[bold red]Plural refuses our client credentials[/] since {cred['since'].isoformat(timespec='seconds')} "
                  f"({cred['seconds']} s): check PLURAL_CLIENT_ID / PLURAL_CLIENT_SECRET; checkouts wait (then "
                  "NEEDS_ATTENTION, credentials_rejected) and go on by themselves once they work")
    else:
        out.print("Plural credentials: " + (f"unknown ({unknown})" if unknown else "accepted"))
    table = Table(title=f"checkouts: {o['checkouts']}")
    table.add_column("status")
    table.add_column("count", justify="right")
    for status, count in o["by_status"].items():
        table.add_row(status, str(count))
    out.print(table)
    overdue = Table(title=f"overdue (due more than {int(reports.OVERDUE_AFTER.total_seconds())} s ago): "
                          f"{o['overdue']['count']}")
    for column in ("checkout", "state", "late by (s)"):
        overdue.add_column(column)
    for row in o["overdue"]["oldest"]:
        overdue.add_row(row["id"], row["state"], str(row["late_seconds"]))
    out.print(overdue)
    stuck = Table(title=f"NEEDS_ATTENTION: {len(o['needs_attention'])}")
    for column in ("checkout", "stuck in", "since", "reason"):
        stuck.add_column(column)
    for row in o["needs_attention"]:
        stuck.add_row(row["id"], row["stuck_in"] or "-", row["since"].isoformat(timespec="seconds") if row["since"]
                      else "-", row["reason"] or "-")
    out.print(stuck)
    failures = Table(title="failures in the last 24 h, by code")
    failures.add_column("code")
    failures.add_column("count", justify="right")
    for row in o["failures_24h"]:
        failures.add_row(row["code"], str(row["count"]))
    out.print(failures)
    ev = o["events"]
    oldest = f", oldest pending {ev['oldest_pending_seconds']} s" if ev["oldest_pending_seconds"] is not None else ""
    out.print(f"events to the merchant: {ev['pending']} pending, {ev['delivered']} delivered, "
              f"{ev['failed']} failed{oldest}")
    out.print("webhooks from Plural: " + (", ".join(f"{n} {k}" for k, n in sorted(o["webhooks"].items())) or "none"))
    return 0


def _checkout(args: argparse.Namespace) -> int:
    """One checkout's history, gateway calls, webhooks, events and refunds."""
    from rich.console import Console
    from rich.table import Table

    from orchestrator.store import reports

    d = reports.checkout_detail(_repo(), args.checkout_id)  # type: ignore[arg-type]
    if d is None:
        print(f"orchestrator checkout: no checkout {args.checkout_id}", file=sys.stderr)
        return 1
    c = d["checkout"]
    out = Console()
    out.print(f"[bold]{c.id}[/bold]  {d['status']} ({c.state})  {c.amount_value} {c.currency} paise  "
              f"{c.payment_method}{'  pre-auth' if c.pre_auth else ''}  order {c.plural_order_id or '-'}")
    if c.error_code:
        out.print(f"error: {c.error_code}: {c.error_message}")
    if c.attention_reason:
        out.print(f"attention: stuck in {c.attention_from}: {c.attention_reason}")
    if c.claim_token:  # a run's claim: renewed while its worker lives, lapsed if it died
        out.print(f"held by a run until {c.claim_until.isoformat(timespec='seconds')}")
    if c.next_due_at:
        out.print(f"next due {c.next_due_at.isoformat(timespec='seconds')}")
    history = Table(title="history")
    for column in ("at", "from", "to", "fact", "source", "reason"):
        history.add_column(column)
    for t in d["history"]:
        history.add_row(t.at.isoformat(timespec="milliseconds"), t.from_state or "-", t.to_state, t.fact or "-",
                        t.source or "-", t.reason)
    out.print(history)
    calls = Table(title="gateway calls (written ahead)")
    for column in ("started", "step", "reference", "outcome", "ms", "detail"):
        calls.add_column(column)
    for a in d["attempts"]:
        ms = str(int((a.finished_at - a.started_at).total_seconds() * 1000)) if a.finished_at else "-"
        calls.add_row(a.started_at.isoformat(timespec="milliseconds"), a.step, a.reference or "-", a.outcome, ms,
                      a.detail or "-")
    out.print(calls)
    if d["webhooks"]:
        hooks = Table(title="webhooks from Plural")
        for column in ("received", "type", "status", "note"):
            hooks.add_column(column)
        for w in d["webhooks"]:
            hooks.add_row(w.received_at.isoformat(timespec="milliseconds"), w.event_type, w.status, w.note or "-")
        out.print(hooks)
    events = Table(title="events to the merchant")
    for column in ("created", "event", "type", "delivery", "attempts (code, ms)"):
        events.add_column(column)
    for e in d["events"]:
        tries = ", ".join(f"{a.status_code or a.error or '-'} {a.latency_ms}" for a in d["deliveries"][e.id])
        events.add_row(e.created_at.isoformat(timespec="milliseconds"), e.event_id, e.type, e.status, tries or "-")
    out.print(events)
    for r in d["refunds"]:
        out.print(f"refund {r.id}: {r.state} {r.amount_value} {r.currency} ({r.origin})")
    return 0


DESCRIPTION = """Payment orchestration for Plural (Pine Labs): checkouts driven to a final state.

Each process runs on its own (api, worker, beat); configuration comes from the environment (see
README). For development, `./run.sh up` (`python -m devkit up`) starts everything on the embedded defaults."""


class Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown with every option; descriptions kept as written."""


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("plural-orchestrator")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout without install
        release = "unknown"
    parser = argparse.ArgumentParser(prog="orchestrator", description=DESCRIPTION, formatter_class=Help)
    parser.add_argument("--version", action="version", version=f"orchestrator {release}")
    sub = commands(parser)

    api = sub.add_parser("api", help="run the merchant API (and webhook receiver)")
    api.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    api.add_argument("--port", type=int, default=8000, help="port to listen on")
    api.set_defaults(func=_api)

    worker = sub.add_parser("worker", help="run a Celery worker (thread pool, I/O bound)")
    worker.add_argument("--concurrency", type=int, default=None, help="threads (default WORKER_CONCURRENCY)")
    worker.set_defaults(func=_worker)

    sub.add_parser("beat", help="run Celery beat (the due-time sweep); run exactly one").set_defaults(func=_beat)
    mig = sub.add_parser("migrate", help="apply database migrations")
    mig.add_argument("--wait", type=float, default=60.0, help="seconds to keep retrying until the database answers")
    mig.set_defaults(func=_migrate)

    sub.add_parser("status", help="where checkouts stand: by status, overdue, NEEDS_ATTENTION, failures, "
                                  "the event backlog").set_defaults(func=_reading(_status))
    one = sub.add_parser("checkout", help="one checkout's history, gateway calls, webhooks, events and refunds")
    one.add_argument("checkout_id", help="the checkout (chk_…)")
    one.set_defaults(func=_reading(_checkout))

    for action in ("retry", "resolve"):
        op = sub.add_parser(action, help=f"{action} a checkout that NEEDS_ATTENTION (recorded in its history)" + (
            "; asks Plural's Get Order first and refuses an outcome Plural's view contradicts" if action == "resolve"
            else ""))
        op.add_argument("checkout_id", help="the checkout (chk_…)")
        if action == "resolve":
            op.add_argument("--as", dest="outcome", required=True, choices=["COMPLETED", "CANCELLED", "FAILED"])
        op.add_argument("--operator", default=os.environ.get("USER", "operator"), help="who decides (for the history)")
        op.set_defaults(func=_operator, action=action)

    rr = sub.add_parser("resolve-refund", help="resolve a refund that NEEDS_ATTENTION: asks Plural for its refund "
                                              "order and follows it (PROCESSED, FAILED); refuses what it cannot check")
    rr.add_argument("refund_id", help="the refund (rfd_…)")
    rr.add_argument("--operator", default=os.environ.get("USER", "operator"), help="who decides (for the record)")
    rr.set_defaults(func=_resolve_refund)

    return parser


def commands(parser: argparse.ArgumentParser) -> Any:
    """The parser's subcommands, each showing its options' defaults and its help as description."""
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    real_add = sub.add_parser

    def add_parser(name: str, **kwargs: object) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", Help)
        kwargs.setdefault("description", kwargs.get("help"))
        return real_add(name, **kwargs)  # type: ignore[arg-type]

    sub.add_parser = add_parser  # type: ignore[method-assign]
    return sub


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str) -> int:
    """Parse, load the settings (a bad one: exit 2 naming it), configure logging, run the command."""
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, "orchestrator")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

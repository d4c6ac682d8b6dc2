"""A throwaway PostgreSQL server for tests and benchmarks (like ``redis_server`` for Redis): the
machine's own server binaries, a temporary data directory, trust auth on 127.0.0.1, no fsync."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from devkit.redis_server import free_port


class NoPostgres(RuntimeError):
    """This machine cannot start a PostgreSQL server; the message says why."""


@dataclass
class PostgresServer:
    """A running throwaway server: its SQLAlchemy URL, and a way to crash and restart it."""

    url: str
    data: str
    bindir: str
    run_as: list[str]

    def restart(self) -> None:
        """Stop the server at once, as a crash would (every connection dropped, transactions in
        flight lost), and start it again on the same port and data."""
        command = [f"{self.bindir}/pg_ctl", "-D", self.data, "-w", "-m", "immediate", "-l", f"{self.data}/log",
                   "restart"]
        done = subprocess.run(self.run_as + command, capture_output=True, text=True, cwd=self.data)
        if done.returncode != 0:
            raise NoPostgres(f"could not restart the PostgreSQL server: {done.stderr.strip()[-300:]}")


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL, stop it and delete its data."""
    with throwaway_postgres_server() as server:
        yield server.url


@contextmanager
def throwaway_postgres_server() -> Iterator[PostgresServer]:
    """Start a server, yield it, stop it and delete its data."""
    pg_ctl = shutil.which("pg_ctl") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))), None)
    if not pg_ctl:
        raise NoPostgres("no PostgreSQL server binaries on this machine")
    bindir = os.path.dirname(os.path.realpath(pg_ctl))
    run_as: list[str] = []
    data = tempfile.mkdtemp(prefix="orchestrator-pg-")
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise NoPostgres("running as root with no postgres user") from None
        shutil.chown(data, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    for command in ([f"{bindir}/initdb", "-D", data, "-U", "orchestrator", "--auth=trust", "-E", "UTF8"],
                    [f"{bindir}/pg_ctl", "-D", data, "-w", "-l", f"{data}/log", "-o",
                     f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                     "start"]):
        # run from the data directory: the server's user may not reach the caller's directory
        done = subprocess.run(run_as + command, capture_output=True, text=True, cwd=data)
        if done.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise NoPostgres(f"could not start a PostgreSQL server: {done.stderr.strip()[-300:]}")
    try:
        yield PostgresServer(f"postgresql://orchestrator@127.0.0.1:{port}/postgres", data, bindir, run_as)
    finally:
        subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True,
                       cwd=data)
        shutil.rmtree(data, ignore_errors=True)

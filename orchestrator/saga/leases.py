"""A run's claim lives as long as its process does.

A run's first write claims its checkout (or refund; a webhook processor, its batch of events) for
``CLAIM_LEASE_SECONDS``; while the run
lives, its process renews the claim every third of that, never past the run lease (the worst case
of a step: ``Settings.run_lease_seconds``) counted from when the run began. A worker killed
outright (SIGKILL, out of memory, a lost machine) stops renewing, so the rows its runs held are
free again within one claim lease and the sweep re-drives them, instead of waiting out the worst
case of a step. A live run never sees its claim lapse while the renewals go through; if they stop
(the database unreachable for a whole lease), the run is treated as a dead one: a rival may take
the row, and the first write of the old run after that raises ``LostClaim`` (every write of a run
is fenced by its token), while its gateway calls are written ahead and looked up before anything
is sent again, as after any crash.

``Leases`` keeps the claims of this process's live runs; ``renew`` moves their ends in one
statement per table; a worker renews on a daemon thread started with its first run (the
in-process test harness calls ``renew`` itself).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from orchestrator.store.repo import Repo
from orchestrator.telemetry.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Held:
    table: type[Any]
    row_id: str
    #: the run's token once its first write has taken the claim (None before)
    token: Callable[[], str | None]
    #: renewals stop here: the run's start plus the run lease
    cap: dt.datetime


class Leases:
    def __init__(self, repo: Repo, lease_seconds: float, cap_seconds: float,
                 clock: Callable[[], dt.datetime], renewing: bool = False) -> None:
        """``renewing``: start the renewing thread with the first claim held (a worker process)."""
        self.repo = repo
        self.renewing = renewing
        self.lease = dt.timedelta(seconds=min(lease_seconds, cap_seconds))
        self.cap = dt.timedelta(seconds=cap_seconds)
        self.clock = clock
        self._held: dict[int, Held] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, repo: Repo, settings: Any, clock: Callable[[], dt.datetime],
                      renewing: bool = False) -> "Leases":
        """``CLAIM_LEASE_SECONDS``, renewed up to the run lease."""
        return cls(repo, settings.claim_lease_seconds, settings.run_lease_seconds, clock, renewing=renewing)

    @property
    def lease_seconds(self) -> float:
        return self.lease.total_seconds()

    @contextlib.contextmanager
    def holding(self, table: type[Any], row_id: str, token: Callable[[], str | None]) -> Iterator[None]:
        """While the block runs, the claim ``token()`` names on ``row_id`` is renewed."""
        if self.renewing and self._thread is None:
            self.start()
        key = next(self._keys)
        with self._lock:
            self._held[key] = Held(table, row_id, token, self.clock() + self.cap)
        try:
            yield
        finally:
            with self._lock:
                del self._held[key]

    def renew(self) -> int:
        """Move the end of every live run's claim to a lease from now (not past its cap); how many
        claims were sent (a claim given back or taken over since is left alone by the statement)."""
        now = self.clock()
        with self._lock:
            held = list(self._held.values())
        by_table: dict[type[Any], list[tuple[str, str, dt.datetime]]] = {}
        for h in held:
            token = h.token()
            if token is not None and now < h.cap:
                by_table.setdefault(h.table, []).append((h.row_id, token, min(now + self.lease, h.cap)))
        for table, claims in by_table.items():
            self.repo.renew(table, claims)
        return sum(len(c) for c in by_table.values())

    def start(self) -> None:
        """Renew every third of a lease on a daemon thread, until ``stop``."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._renewing, name="leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _renewing(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                renewed = self.renew()
            except Exception as exc:  # the next round tries again: a lease outlives a missed round
                log.warning("leases.renew_failed", error=type(exc).__name__)
            else:
                if renewed:
                    log.debug("leases.renewed", claims=renewed)

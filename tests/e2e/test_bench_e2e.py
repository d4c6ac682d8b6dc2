"""The throughput benchmark still runs end to end (tiny numbers: its figures mean nothing here).
It prints, never asserts, speed; this only checks that every line it promises comes out."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_throughput_benchmark_prints_the_ratio_the_latency_kept_and_the_second_workers_worth():
    done = subprocess.run([sys.executable, "bench/checkout_throughput.py", "--checkouts", "6", "--chains", "8",
                           "--concurrency", "4", "--rounds", "1", "--configs", "sqlite:200:2:8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"sqlite +200 ms +2 workers +8 in flight +floor +[\d.]+ chains/s .* ratio [\d.]+", out), out
    assert re.search(r"200 ms keeps [\d.]+ of the 0 ms rate on sqlite", out), out
    assert re.search(r"2 workers of 8 threads run ×[\d.]+ the rate of one on sqlite at 200 ms", out), out


def test_a_ratio_of_alternating_rounds_is_the_median_of_neighbours_ratios():
    from bench.checkout_throughput import paired
    from bench.floor import Run

    def runs(*rates: float) -> list[Run]:
        return [Run("r", int(rate * 10), 10.0, [1.0]) for rate in rates]

    # the machine twice as fast in the middle rounds: each pair still says 0.8
    assert paired(runs(8, 16, 16, 8), runs(10, 20, 20, 10)) == "0.80 (0.80–0.80)"
    assert paired(runs(5, 9, 7), runs(10, 10, 10)) == "0.70 (0.50–0.90)"
    assert paired(runs(5), runs(10)) == "0.50"

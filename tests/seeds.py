"""Plural's own samples, read from the two seed documents (copied into tests/fixtures/seeds)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SEEDS = Path(__file__).parent / "fixtures" / "seeds"
CARD_DOC = SEEDS / "plural-card-native-otp.md"
EMI_DOC = SEEDS / "plural-debit-emi.txt"


@lru_cache(maxsize=None)
def samples(path: Path) -> tuple[Any, ...]:
    """Every top-level JSON object in a document, in order (nested objects are not repeated)."""
    text = path.read_text()
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = 0
    end_of_last = 0
    for line in text.split("\n"):
        if line.startswith("{") and pos >= end_of_last:
            obj, length = decoder.raw_decode(text[pos:])
            found.append(obj)
            end_of_last = pos + length
        pos += len(line) + 1
    return tuple(found)


def card_samples() -> tuple[Any, ...]:
    return tuple(s for s in samples(CARD_DOC) if "html" not in s)


def emi_samples() -> tuple[Any, ...]:
    return samples(EMI_DOC)


def all_samples() -> tuple[Any, ...]:
    return card_samples() + emi_samples()


def find(predicate: Any, pool: tuple[Any, ...] | None = None) -> list[Any]:
    """Distinct samples matching ``predicate`` (the UAT and PROD variants of a request are one)."""
    out: list[Any] = []
    for sample in pool if pool is not None else all_samples():
        if predicate(sample) and sample not in out:
            out.append(sample)
    return out

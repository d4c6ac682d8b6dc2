"""Our own identifiers: a prefix and 32 hex digits, never holding a run of 13 or more digits.

The log masking hides any digit run inside an identifier that could hold a card number, so an id
we mint is drawn again until it has no such run; it then stays readable in every log line.
"""

from __future__ import annotations

import re
import uuid

_LONG_RUN = re.compile(r"\d{13,}")


def new_id(prefix: str) -> str:
    """``prefix`` + 32 hex digits with no run of 13 or more digits (redrawn; about 4% of draws)."""
    while True:
        value = uuid.uuid4().hex
        if not _LONG_RUN.search(value):
            return prefix + value

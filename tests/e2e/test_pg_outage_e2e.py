"""A PostgreSQL crash in the middle of checkouts: pooled connections die with it (in use or idle),
every answer meanwhile is JSON (never a 500), and every checkout still completes exactly once."""

from __future__ import annotations

import pytest

from tests.e2e.test_checkout_e2e import make_stack
from tests.e2e.test_outage_e2e import loses_nothing_through

pytestmark = pytest.mark.e2e


def test_a_postgres_crash_loses_nothing_and_answers_json_throughout(tmp_path, postgres_server):
    with make_stack(tmp_path, DATABASE_URL=postgres_server.url) as stack:
        loses_nothing_through(stack, postgres_server.restart)

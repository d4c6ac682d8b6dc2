"""A credentials refusal is shown at once by ``orchestrator status``, ``/metrics`` and the console,
and disappears by itself with the first token Plural issues again."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from orchestrator.entrypoints import cli
from orchestrator.entrypoints.api.app import create_app
from tests.saga.test_credentials_steps import create, refuse, resumed

AUTH = ("operator", "s3cret-console")


def refused_checkout(h):
    refuse(h)
    row = create(h)
    h.drain()
    return row


def status(monkeypatch, capsys, h):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{h.db_path}")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, *a, **k: h.redis))  # the harness's Redis
    assert cli.main(["status"]) == 0
    return capsys.readouterr().out


def gauge(client):
    text = client.get("/metrics").text
    return [line for line in text.splitlines() if line.startswith("orchestrator_plural_credentials_rejected ")][0]


def test_status_shows_the_refusal_then_that_the_credentials_are_accepted(harness, monkeypatch, capsys):
    h = harness
    refused_checkout(h)
    assert "Plural refuses our client credentials since" in status(monkeypatch, capsys, h)
    resumed(h)
    out = status(monkeypatch, capsys, h)
    assert "Plural credentials: accepted" in out and "refuses" not in out


def test_metrics_gauge_is_1_while_refused_and_0_once_a_token_is_issued(harness):
    h = harness
    with TestClient(create_app(lambda: h.service, "k")) as client:
        assert gauge(client) == "orchestrator_plural_credentials_rejected 0.0"
        refused_checkout(h)
        assert gauge(client) == "orchestrator_plural_credentials_rejected 1.0"
        resumed(h)
        assert gauge(client) == "orchestrator_plural_credentials_rejected 0.0"


def test_the_console_names_the_refusal_while_it_lasts(harness):
    h = harness
    with TestClient(create_app(lambda: h.service, "k", console=AUTH)) as client:
        refused_checkout(h)
        page = client.get("/console", auth=AUTH).text
        assert 'id="credentials"' in page and "Plural refuses our client credentials" in page
        resumed(h)
        assert 'id="credentials"' not in client.get("/console", auth=AUTH).text

"""The deployment files keep the sandbox out of production (issue 8, finding 8)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _service(text: str, name: str) -> str:
    match = re.search(rf"^  {name}:\n((?:    .*\n|\n)*)", text, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_the_sandbox_starts_only_in_the_dev_profile_and_only_on_loopback():
    compose = (ROOT / "docker-compose.yml").read_text()
    sandbox = _service(compose, "sandbox")
    assert 'profiles: ["dev"]' in sandbox
    assert '"127.0.0.1:8700:8700"' in sandbox


def test_production_has_no_default_secret_and_no_default_api_base():
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "sandbox:8700" not in compose and "sandbox-" not in compose
    for name in ("PLURAL_CLIENT_SECRET", "PLURAL_WEBHOOK_SECRET", "ORCHESTRATOR_API_KEY", "CARD_ENCRYPTION_KEY"):
        assert re.search(rf"{name}: \$\{{{name}:\?", compose), name


def test_migrations_finish_before_the_api_workers_and_beat_start():
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "migrate: {condition: service_completed_successfully}" in compose
    assert "--wait" in _service(compose, "migrate")


def test_the_image_runs_as_a_user_that_is_not_root_and_ships_no_secrets():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and "*.env" in ignored and ".git" in ignored


def test_flower_is_there_for_operators_on_loopback_behind_a_password():
    compose = (ROOT / "docker-compose.yml").read_text()
    flower = _service(compose, "flower")
    assert 'profiles: ["ops"]' in flower and '"127.0.0.1:5555:5555"' in flower
    assert "FLOWER_BASIC_AUTH: ${FLOWER_BASIC_AUTH:?" in flower


def test_only_the_api_is_published_beyond_loopback_and_metrics_want_a_token():
    """Issue 22, item 12: Redis, PostgreSQL, the migration, workers (their metrics port) and beat
    publish nothing; operators' tools are on loopback; the api passes METRICS_TOKEN through."""
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in ("redis", "postgres", "migrate", "worker", "beat"):
        assert "ports:" not in _service(compose, name), name
    published = re.findall(r'^    ports: \[(.*)\]$', compose, re.MULTILINE)
    beyond_loopback = [p for entry in published for p in re.findall(r'"([^"]+)"', entry)
                       if not p.startswith("127.0.0.1:")]
    assert beyond_loopback == ["8000:8000"]
    assert 'ports: ["8000:8000"]' in _service(compose, "api")
    assert "METRICS_TOKEN: ${METRICS_TOKEN:-}" in compose
    assert not re.search(r"METRICS_PUBLIC|API_DOCS", compose)  # production keeps the defaults: closed

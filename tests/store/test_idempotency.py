"""The Idempotency-Key store on its own, on SQLite and PostgreSQL: every answer ``begin`` can give."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from tests.conftest import Clock


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: Any, tmp_path: Any) -> Any:
    from orchestrator.store.database import make_engine
    from orchestrator.store.migrate import upgrade
    from orchestrator.store.idempotency import IdempotencyStore
    from orchestrator.store.repo import Repo

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    clock = Clock()
    return IdempotencyStore(Repo(make_engine(url), clock=clock), keep=dt.timedelta(hours=24)), clock


def key() -> str:
    return uuid.uuid4().hex


def test_a_new_key_goes_ahead(store):
    keys, _ = store
    assert keys.begin(key(), "POST /v1/checkouts", "h1") == ("new", None)


def test_an_answered_key_with_the_same_body_replays_the_first_answer(store):
    keys, _ = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")
    keys.finish(k, "POST /v1/checkouts", 201, '{"id": "chk_1"}')
    verdict, row = keys.begin(k, "POST /v1/checkouts", "h1")
    assert (verdict, row.status_code, row.response_body) == ("replay", 201, '{"id": "chk_1"}')


def test_the_same_key_with_another_body_is_a_mismatch(store):
    keys, _ = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")
    keys.finish(k, "POST /v1/checkouts", 201, "{}")
    assert keys.begin(k, "POST /v1/checkouts", "h2")[0] == "mismatch"


def test_a_key_still_being_answered_is_in_progress(store):
    keys, _ = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")
    assert keys.begin(k, "POST /v1/checkouts", "h1")[0] == "in_progress"


def test_the_same_key_on_another_route_is_another_key(store):
    keys, _ = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")
    assert keys.begin(k, "POST /v1/checkouts/chk_1/refunds", "h1") == ("new", None)


def test_an_expired_key_is_new_again_and_forgets_its_old_answer(store):
    keys, clock = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")
    keys.finish(k, "POST /v1/checkouts", 201, "{}")
    clock.advance(25 * 3600)
    assert keys.begin(k, "POST /v1/checkouts", "h2") == ("new", None)
    assert keys.begin(k, "POST /v1/checkouts", "h2")[0] == "in_progress"


def test_a_key_whose_first_request_never_answered_is_taken_over_after_a_minute(store):
    keys, clock = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")  # then the process died: no finish, no forget
    clock.advance(30)
    assert keys.begin(k, "POST /v1/checkouts", "h1")[0] == "in_progress"
    clock.advance(31)
    assert keys.begin(k, "POST /v1/checkouts", "h1") == ("new", None)
    assert keys.begin(k, "POST /v1/checkouts", "h1")[0] == "in_progress"  # the retry holds it now


def test_an_abandoned_key_is_not_taken_over_with_another_body(store):
    keys, clock = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")
    clock.advance(61)
    assert keys.begin(k, "POST /v1/checkouts", "h2")[0] == "mismatch"


def test_of_two_retries_taking_over_an_abandoned_key_at_once_one_runs(store):
    import threading

    keys, clock = store
    k = key()
    keys.begin(k, "POST /v1/checkouts", "h1")
    clock.advance(61)
    verdicts: list[str] = []
    gate = threading.Barrier(4)

    def retry() -> None:
        gate.wait()
        verdicts.append(keys.begin(k, "POST /v1/checkouts", "h1")[0])

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(verdicts) == ["in_progress"] * 3 + ["new"]


def test_forget_frees_an_unanswered_key_but_never_an_answered_one(store):
    keys, _ = store
    unanswered, answered = key(), key()
    keys.begin(unanswered, "POST /v1/checkouts", "h1")
    keys.begin(answered, "POST /v1/checkouts", "h1")
    keys.finish(answered, "POST /v1/checkouts", 201, "{}")
    keys.forget(unanswered, "POST /v1/checkouts")
    keys.forget(answered, "POST /v1/checkouts")
    assert keys.begin(unanswered, "POST /v1/checkouts", "h1") == ("new", None)
    assert keys.begin(answered, "POST /v1/checkouts", "h1")[0] == "replay"


def test_prune_removes_only_keys_past_their_keep(store):
    keys, clock = store
    old = key()
    keys.begin(old, "POST /v1/checkouts", "h1")
    clock.advance(25 * 3600)
    recent = key()
    keys.begin(recent, "POST /v1/checkouts", "h1")
    assert keys.prune() >= 1
    assert keys.begin(recent, "POST /v1/checkouts", "h1")[0] == "in_progress"

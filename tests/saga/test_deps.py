"""The steps' collaborators: one engine per Deps, one Deps per process."""

from __future__ import annotations

import dataclasses

import pytest


def test_a_deps_builds_its_engine_once(harness):
    d = harness.deps
    assert d.engine is d.engine


def test_the_engine_writes_with_the_collaborators_of_its_deps(harness):
    d = harness.deps
    assert (d.engine.settings, d.engine.repo, d.engine.vault, d.engine.enqueue, d.engine.clock) == (
        d.settings, d.repo, d.vault, d.enqueue, d.clock)


def test_a_collaborator_the_engine_holds_is_not_replaced_under_it(harness):
    d = harness.deps
    with pytest.raises(AttributeError, match="held by its engine"):
        d.settings = d.settings.model_copy(update={"step_chain": 3})
    other = dataclasses.replace(d, settings=d.settings.model_copy(update={"step_chain": 3}))
    assert other.engine is not d.engine and other.engine.settings.step_chain == 3


def test_the_runtime_builds_one_deps_for_its_process(harness):
    from orchestrator.entrypoints.runtime import Runtime

    d = harness.deps
    rt = Runtime(settings=d.settings, repo=d.repo, redis=harness.redis, vault=d.vault, plural=d.plural,
                 enqueue=d.enqueue, leases=d.leases)
    assert rt.deps() is rt.deps() and rt.deps().engine is rt.deps().engine

"""Tests leave nothing on the shared broker (often the user's own, `make run`'s): a worker
test's topics (its prefix), Faust's changelog, repartition and assignor topics and its
consumer group (its app id) are deleted at teardown, after the worker has stopped.

Without the deletion, thousands of runs once left 13,696 partition directories (4.3 GiB) on
the local broker, which then no longer started within broker.py's wait.
"""

from __future__ import annotations

import pytest

from benchmarks.harness import leftovers, remove_run
from models.synthetic import GeneratorConfig, TrafficGenerator
from streams.feed import produce_events
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import Runs, read_all

pytestmark = pytest.mark.integration


async def test_a_worker_tests_topics_and_group_are_gone_after_its_teardown(
    settings: Settings, start_worker, own_runs: Runs
) -> None:
    await ensure_topics(settings)
    gen = TrafficGenerator(GeneratorConfig(seed=5))
    await produce_events(settings, gen.events(50))
    worker = start_worker(settings)
    got = await read_all(settings, "decisions_topic", expect=1, timeout=120, worker=worker)
    assert got, worker.output()

    topics, groups = await leftovers(settings)
    # the worker made more than the prefix's topics: its changelogs and its group
    assert any(t.startswith(settings.topic_prefix) for t in topics)
    assert any(t.startswith(settings.app_id) and t.endswith("-changelog") for t in topics)
    assert settings.app_id in groups, groups

    # the worker still running: what the fixture's teardown does (it runs again after the
    # test, with nothing left to do)
    own_runs.close()
    assert worker.proc.poll() is not None, "the worker was not stopped before the deletion"
    assert await leftovers(settings) == ([], [])


async def test_the_users_own_topics_are_never_removed(kafka: str) -> None:
    with pytest.raises(ValueError, match="could be the user's"):
        await remove_run(Settings(broker=kafka))
    with pytest.raises(ValueError, match="could be the user's"):
        await remove_run(Settings(broker=kafka, topic_prefix="x."))

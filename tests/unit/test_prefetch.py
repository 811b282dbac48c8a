"""streams/patches/prefetch.py: the worker's consumer fetches again 10 ms after records
wait, not aiokafka's 100 ms, and the patch refuses an aiokafka without that backoff."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher

from streams.patches import PatchVersionError
from streams.patches.consumer import ConsumerThread
from streams.patches.prefetch import PREFETCH_BACKOFF_S


def started(fetcher: Any) -> ConsumerThread:
    """The worker's consumer thread after on_start, its aiokafka consumer a stand-in."""

    class Consumer:
        _fetcher = fetcher

        async def start(self) -> None:
            pass

    thread = object.__new__(ConsumerThread)  # no app or transport needed for on_start
    thread.thread_loop = None  # type: ignore[assignment]
    thread._consumer = None
    thread._create_consumer = lambda loop: Consumer()  # type: ignore[method-assign, assignment]
    asyncio.run(thread.on_start())
    return thread


def test_the_worker_fetches_again_after_10_ms_not_aiokafkas_100() -> None:
    default = inspect.signature(Fetcher.__init__).parameters["prefetch_backoff"].default
    assert default == 0.1  # what the patch was measured against
    fetcher = SimpleNamespace(_prefetch_backoff=default)
    started(fetcher)
    assert fetcher._prefetch_backoff == PREFETCH_BACKOFF_S == 0.01


def test_an_aiokafka_without_the_backoff_is_refused() -> None:
    with pytest.raises(PatchVersionError):
        started(SimpleNamespace())

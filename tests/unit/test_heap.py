"""streams.app.settle_heap: what the worker has built is frozen out of full collections, and
young collections run every 20,000 allocations instead of Python's 700."""

from __future__ import annotations

import gc

from streams.app import GC_GEN0, settle_heap


def test_the_worker_s_heap_is_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    kept = [{"built": i} for i in range(1_000)]  # the model, caches, the app
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(kept)
        assert gc.get_threshold()[0] == GC_GEN0 > 700 * 10
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

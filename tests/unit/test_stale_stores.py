"""streams/patches/stale_stores.py: a store that cannot be emptied in place gives a one-line
error naming the folder to remove (the RocksDB case is tests/integration/test_stale_store)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.types import TP

from streams.patches.stale_stores import StaleStoreError, discard


def test_a_store_that_cannot_be_emptied_names_the_folder_to_remove() -> None:
    table = SimpleNamespace(
        name="bills",
        data=object(),  # no partitions of its own to empty
        app=SimpleNamespace(conf=SimpleNamespace(tabledir="/data/worker/v1/tables")),
    )
    with pytest.raises(StaleStoreError) as raised:
        discard(table, TP("app-bills-changelog", 3), persisted=118, last=-1)
    said = str(raised.value)
    assert "\n" not in said
    assert "table bills" in said and "app-bills-changelog[3]" in said and "118 > -1" in said
    assert "remove /data/worker/v1/tables" in said

"""/livez: the worker says it is dead once an agent has stopped (Kubernetes restarts it)."""

from __future__ import annotations

import orjson
import pytest

from streams.app import create_app
from streams.patches import PatchVersionError, written_for
from streams.settings import Settings


async def test_livez_fails_once_an_agent_has_stopped(tmp_path):
    app = create_app(Settings(store="memory://", data_dir=tmp_path), server=None)  # type: ignore[arg-type]
    view = app.web.views["/livez"]
    ok = await view.get(None)  # type: ignore[attr-defined]
    assert ok.status == 200 and orjson.loads(ok.body) == {"status": "ok"}
    app.failure = ("score-parcels", RuntimeError("boom"))
    failed = await view.get(None)  # type: ignore[attr-defined]
    assert failed.status == 503
    body = orjson.loads(failed.body)
    assert body["agents"] == ["score-parcels"] and "boom" in body["reason"]


def test_a_patch_refuses_a_library_version_it_was_not_written_for():
    written_for("faust-streaming", "0.15.3")  # the pinned version passes
    with pytest.raises(PatchVersionError, match=r"faust-streaming==0\.15\.2"):
        written_for("faust-streaming", "0.15.2")

"""The worker creates Faust's internal topics before it joins its group (streams/topics.py
says why): every stage topic and every changelog, with the right configuration."""

from __future__ import annotations

from pathlib import Path

from streams.app import create_app, internal_topics
from streams.settings import Settings


def test_every_stage_topic_and_changelog_is_named(tmp_path: Path) -> None:
    s = Settings(store="memory://", data_dir=tmp_path, app_id="pr-x")
    app = create_app(s, server=None)  # type: ignore[arg-type]
    topics = internal_topics(app)
    stages = {name for name, cfg in topics.items() if not cfg}
    changelogs = {name for name, cfg in topics.items() if cfg == {"cleanup.policy": "compact"}}
    assert stages == {"pr-x-by-consignee", "pr-x-by-shipper", "pr-x-by-filer"}
    assert changelogs == {
        f"pr-x-{t}-changelog" for t in ("bills", "consignees", "shippers", "filers")
    }
    assert len(topics) == 7

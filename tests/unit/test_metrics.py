"""The worker's /metrics: the project's metrics and Faust's sensors never share a name.

The default app id once made Faust's `table_operations` counter `parcel_risk_table_
operations`, the project's own, and the worker crashed at start (issue 14). These tests
build the real app, through `create_app`, with the default id and others.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics, monitoring
from streams.app import create_app
from streams.settings import Settings

# the default, ids that spell a project metric's prefix or one of Faust's, and odd ones
APP_IDS = ["parcel-risk", "parcel_risk", "faust", "parcel-risk-decisions", "x.y-z"]


def _project_families() -> set[str]:
    return {
        fam.name
        for module in (metrics, monitoring)
        for obj in vars(module).values()
        if isinstance(obj, MetricWrapperBase)
        for fam in obj.describe()
    }


def _faust_families() -> set[str]:
    return {fam.name for obj in metrics.faust_metrics() for fam in obj.describe()}


def test_project_and_faust_metrics_live_in_separate_namespaces():
    ours, faust = _project_families(), _faust_families()
    assert ours and faust
    assert all(name.startswith(metrics.PREFIX) for name in ours), ours
    assert all(name.startswith(metrics.FAUST_PREFIX + "_") for name in faust), faust
    assert not ours & faust
    # and Faust's sensors, named as Faust itself would for the default id, *would* collide:
    # the regression this guards against is real
    default = Settings().app_id.replace("-", "_")
    assert f"{default}_table_operations" in {n.removesuffix("_total") for n in ours}


@pytest.mark.parametrize("app_id", APP_IDS)
def test_the_app_builds_and_exposes_metrics_with_any_app_id(app_id, tmp_path):
    s = Settings(app_id=app_id, store="memory://", data_dir=tmp_path)
    app = create_app(s, server=None)  # type: ignore[arg-type]  # only used while running
    assert "/metrics" in app.web.views
    text = generate_latest(REGISTRY).decode()
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names)), "a metric family is exposed twice"
    assert "parcel_risk_table_operations" in names
    assert "faust_table_operations" in names


def test_per_filer_series_are_capped(monkeypatch):
    monkeypatch.setattr(metrics, "MAX_FILER_SERIES", len(metrics._filer_labels) + 2)
    before = metrics.FILERS.labels("other", "entries")._value.get()
    metrics.count_filers([("Z01", "entries"), ("Z02", "entries"), ("Z03", "entries")] * 2)
    assert metrics.FILERS.labels("Z02", "entries")._value.get() == 2
    assert metrics.FILERS.labels("other", "entries")._value.get() == before + 2  # Z03
    assert "Z03" not in metrics._filer_labels


def test_the_board_of_filers_is_exposed_and_promtool_accepts_the_exposition():
    """Filers on this worker's board, scorecards read, the time of the last one; the
    project's exposition passes `promtool check metrics` (Debian's prometheus package)."""
    import shutil
    import subprocess
    import time

    before = metrics.BOARD_UPDATES._value.get()
    metrics.board_read(3, 0)  # the reader started: nothing read yet
    assert metrics.BOARD_FILERS._value.get() == 3 and metrics.BOARD_UPDATES._value.get() == before
    metrics.board_read(5, 7)
    assert metrics.BOARD_FILERS._value.get() == 5
    assert metrics.BOARD_UPDATES._value.get() == before + 7
    assert time.time() - metrics.BOARD_LAST_UPDATE._value.get() < 5
    text = generate_latest(REGISTRY).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["parcel_risk_filer_board_filers"].type == "gauge"
    assert families["parcel_risk_filer_board_updates"].type == "counter"
    assert families["parcel_risk_filer_board_last_update_timestamp_seconds"].type == "gauge"
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (`make test` installs Debian's prometheus)")
    # the project's families (Faust's own `faust_events_runtime_ms` fails promtool's lint)
    ours = "".join(line + "\n" for line in text.splitlines() if metrics.PREFIX in line)
    checked = subprocess.run([tool, "check", "metrics"], input=ours, text=True,
                             capture_output=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr

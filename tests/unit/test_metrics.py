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

"""Settings: environment parsing and refusing promises the worker cannot keep."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.settings import ROOT, Settings, from_env


def test_environment_overrides_defaults_with_types() -> None:
    s = from_env({"PARCEL_RISK_PARTITIONS": "16", "PARCEL_RISK_SESSION_TIMEOUT_S": "6.5"})
    assert s.partitions == 16 and s.session_timeout_s == 6.5
    assert from_env({}, partitions=3).partitions == 3


def test_exactly_once_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="duplicate decisions"):
        Settings(processing_guarantee="exactly_once").check()
    Settings().check()


def test_worker_exits_with_a_clear_error_for_exactly_once() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env={"PARCEL_RISK_PROCESSING_GUARANTEE": "exactly_once", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "only at_least_once is supported" in " ".join((done.stderr + done.stdout).split())

"""deploy/kafka/broker.py says why a broker did not answer in time: a state dir with
thousands of partitions (test runs that left their topics once made 13,696) loads slowly."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness import broker_script


def test_a_broker_slow_with_many_partitions_is_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = broker_script()
    monkeypatch.setattr(broker, "state_dir", lambda port: tmp_path)
    data = tmp_path / "data"
    (data / "__cluster_metadata-0").mkdir(parents=True)
    for i in range(1500):
        (data / f"t{i:04x}.parcels.manifest-0").mkdir()
    (data / "t0000.parcels.manifest-0" / "00000000000000000000.log").write_bytes(b"x" * 1024)
    said = broker.not_up(19999, 90)
    assert "did not answer within 90s" in said
    assert "1,500 partition directories" in said and str(data) in said
    assert "may just be slow" in said

    with pytest.raises(TimeoutError, match="1,500 partition directories"):
        broker.wait(1, timeout=0.1)  # nothing listens on port 1


def test_a_broker_with_few_partitions_gets_the_short_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = broker_script()
    monkeypatch.setattr(broker, "state_dir", lambda port: tmp_path)
    said = broker.not_up(19999, 90)
    assert "0 partition directories" in said and "slow" not in said

"""A real Prometheus server scrapes a running worker; PromQL returns the decision rate.

The server is Debian's `prometheus` (installed by `make test`'s promtool step), run with
the project's own rules (deploy/prometheus) and a config pointing at this test's worker.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from models.synthetic import GeneratorConfig
from streams.feed import feed
from streams.settings import ROOT, Settings
from streams.topics import ensure_topics
from tests.conftest import eventually, free_port

pytestmark = pytest.mark.integration
RULES = ROOT / "deploy" / "prometheus"


class Prometheus:
    def __init__(self, tmp: Path, target_port: int) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: `make test` installs it (Debian package)")
        config = yaml.safe_load((RULES / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(RULES / f) for f in config["rule_files"]]
        config["scrape_configs"][0]["static_configs"] = [
            {"targets": [f"127.0.0.1:{target_port}"], "labels": {"env": "test"}}
        ]
        path = tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.log = tmp / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator:
    started: list[Prometheus] = []

    def start(port: int) -> Prometheus:
        started.append(Prometheus(tmp_path, port))
        return started[-1]

    yield start
    for p in started:
        p.stop()


async def test_prometheus_scrapes_the_worker(
    settings: Settings, start_worker, prometheus_for
) -> None:
    await ensure_topics(settings)
    worker = start_worker(settings)
    prom = prometheus_for(settings.web_port)
    # a steady feed for the whole test: rate() needs the counter to move between scrapes,
    # and a single burst can be scored before Prometheus has scraped twice
    config = GeneratorConfig(seed=51, parcels_per_second=50)
    feeding = asyncio.create_task(feed(settings, config, 6000, rate=50))
    try:
        await _check_series(prom, worker)
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)


async def _check_series(prom: Prometheus, worker) -> None:
    def value(promql: str) -> float:
        result = prom.query(promql)
        return float(result[0]["value"][1]) if result else 0.0

    assert await eventually(
        lambda: value("sum(rate(parcel_risk_decisions_total[10s]))") > 0, timeout=120
    ), f"{worker.output()}\n{prom.log.read_text()[-2000:]}"
    assert await eventually(lambda: value('up{job="parcel-risk"}') == 1, timeout=10)
    assert await eventually(lambda: value('parcel_risk_table_keys{table="bills"}') > 0, 30)
    assert await eventually(lambda: prom.query("parcel_risk_consumer_lag_records"), 30)
    # Faust's per-record counts reach their series (published each second by the worker's
    # sensors, streams/patches/sensors.py; the dashboard reads this one)
    assert await eventually(
        lambda: value("sum(faust_messages_received_per_topic_total)") > 0, timeout=30
    )
    # every stage times its batches, computing and settling (where a record's time goes;
    # the dashboard reads these)
    for stage in ("join-bills", "consignee-history", "score-parcels", "filer-history"):
        for step in ("compute", "settle"):
            series = f'parcel_risk_stage_batch_seconds_count{{stage="{stage}", step="{step}"}}'
            assert await eventually(lambda series=series: value(series) > 0, 30), series
    # the recording rules load and evaluate against the real series
    assert await eventually(lambda: value("job:parcel_risk_decisions:rate5m") > 0, timeout=30)

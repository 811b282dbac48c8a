"""Targeting on the real broker: rules, de minimis policy, the holds CLI, other consumers."""

from __future__ import annotations

import asyncio
import copy
import shutil
import subprocess
import sys

import orjson
import pytest

from models.records import entry_check_digit
from streams.settings import ROOT
from streams.topics import ensure_topics
from tests.conftest import decisions_for, publish, read_all
from tests.samples import ENTRY, MANIFEST, POLICY_TOML

pytestmark = pytest.mark.integration

RULES = (
    POLICY_TOML
    + """
[[rule]]
name = "watch-acme"
action = "hold"
category = "counterfeit"
shippers = ["Acme Novelty Trading Co Ltd|CN"]
"""
)


def _manifest(hawb: str, shipper: str, day: str) -> dict:
    m = copy.deepcopy(MANIFEST)
    m.update(hawb=hawb, event_time=f"{day}T08:00:00+00:00")
    m["shipper"]["name"] = shipper
    return m


def _entry(hawb: str, day: str, serial: str) -> dict:
    e = copy.deepcopy(ENTRY)
    e.update(
        hawb=hawb,
        event_time=f"{day}T09:00:00+00:00",
        entry_number="AB1" + serial + str(entry_check_digit("AB1", serial)),
    )
    e["shipper"]["name"] = "Plain Goods Ltd"
    return e


@pytest.fixture
def targeting(settings, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    return settings.with_(rules=str(rules))


async def test_rules_and_policy_flag_parcels(targeting, start_worker) -> None:
    s = targeting
    await ensure_topics(s)
    start_worker(s, PARCEL_RISK_RULES=s.rules)
    await publish(
        s,
        "manifest_topic",
        [
            _manifest("WATCH01", "ACME Novelty Trading Co., Ltd.", "2025-03-03"),
            _manifest("PLAIN01", "Plain Goods Ltd", "2025-06-01"),
        ],
    )
    await publish(s, "entries_topic", [_entry("PLAIN01", "2025-06-01", "0000777")])
    got = await decisions_for(s, {"WATCH01", "PLAIN01"})
    watched = got["WATCH01"][0]
    assert watched["action"] == "hold" and watched["category"] == "counterfeit"
    assert watched["rules"] == ["watch-acme"]
    plain = max(got["PLAIN01"], key=lambda d: d["revision"])
    assert "de-minimis-ineligible" in plain["rules"]
    assert plain["action"] in ("hold", "review")

    held = [orjson.loads(v) for _k, v in await read_all(s, "holds_topic", idle_s=2)]
    holds = {h["hawb"]: h for h in held}  # a rescored parcel may be held at each revision
    assert holds["WATCH01"]["rules"] == ["watch-acme"]
    assert any("watch list 'watch-acme'" in r for r in holds["WATCH01"]["reasons"])
    assert any(
        "ineligible for de minimis: origin CN excluded since 2025-05-02" in r
        for r in holds["PLAIN01"]["reasons"]
    )

    # per-category fan-out: the counterfeit team's topic has the watched parcel only if
    # it is a counterfeit hold, and every hold there is counterfeit
    cat = s.with_(holds_topic=s.holds_topic + ".counterfeit")
    fanned = [orjson.loads(v) for _k, v in await read_all(cat, "holds_topic", idle_s=2)]
    assert "WATCH01" in {h["hawb"] for h in fanned}
    assert {h["category"] for h in fanned} == {"counterfeit"}

    # the analysts' CLI: JSON lines of one category only
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "streams.cli",
            "--broker",
            s.broker,
            "--prefix",
            s.topic_prefix,
            "holds",
            "--json",
            "--category",
            "counterfeit",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    printed = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert printed and {h["category"] for h in printed} == {"counterfeit"}
    assert {h["hawb"] for h in printed} == {
        h["hawb"] for h in holds.values() if h["category"] == "counterfeit"
    }

    # Kafka's own console consumer and kcat read the same holds as plain JSON
    java = subprocess.run(
        [
            "java",
            "-cp",
            str(ROOT / "deploy/kafka/target/libs/*"),
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            s.broker,
            "--topic",
            s.topic("holds_topic"),
            "--from-beginning",
            "--max-messages",
            str(len(held)),
            "--timeout-ms",
            "30000",
            "--property",
            "print.key=true",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [ln for ln in java.stdout.splitlines() if ln.strip()]
    assert len(lines) == len(held), java.stderr[-2000:]
    for ln in lines:
        key, value = ln.split("\t", 1)
        assert orjson.loads(value)["hawb"] == key
    if shutil.which("kcat"):
        kc = subprocess.run(
            [
                "kcat",
                "-C",
                "-b",
                s.broker,
                "-t",
                s.topic("holds_topic"),
                "-o",
                "beginning",
                "-c",  # exits once it has them all; -e can stop at an early partition's end
                str(len(held)),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert {orjson.loads(x)["hawb"] for x in kc.stdout.splitlines()} == set(holds)


async def test_bad_rules_file_stops_the_worker_with_its_line(targeting, start_worker) -> None:
    s = targeting
    bad = RULES.replace('action = "hold"', 'action = "arrest"')
    with open(s.rules, "w") as f:
        f.write(bad)
    worker = start_worker(s, PARCEL_RISK_RULES=s.rules)
    code = await asyncio.to_thread(worker.proc.wait, 60)
    assert code == 2
    assert f"{s.rules}:11:" in worker.output()
    assert "action must be hold or review" in worker.output()


async def test_dispose_publishes_a_validated_disposition(settings) -> None:
    from streams.cli import main

    s = settings
    await ensure_topics(s)
    env = ["--broker", s.broker, "--prefix", s.topic_prefix]
    assert await asyncio.to_thread(main, [*env, "dispose", "HX123", "--outcome", "burned"]) == 2
    assert (
        await asyncio.to_thread(
            main,
            [
                *env,
                "dispose",
                "HX123",
                "--outcome",
                "seized_ipr",
                "--note",
                "fake watches",
                "--analyst",
                "ana",
            ],
        )
        == 0
    )
    (got,) = [orjson.loads(v) for _k, v in await read_all(s, "dispositions_topic", idle_s=2)]
    assert got["hawb"] == "HX123" and got["outcome"] == "seized_ipr"
    assert got["note"] == "fake watches" and got["analyst"] == "ana"

"""Configuration: environment variables (PARCEL_RISK_*) with sane local defaults.

One frozen object is built at start-up and passed down, so every module reads the same
values and tests can build their own (unique topic prefix, group id) without touching
the process environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streams import security

ROOT = Path(__file__).resolve().parent.parent


GUARANTEES = ("at_least_once", "exactly_once")  # streams/outbox.py says how each one ends a batch


@dataclass(frozen=True)
class Settings:
    broker: str = "127.0.0.1:9092"
    app_id: str = "parcel-risk"
    topic_prefix: str = ""
    partitions: int = 8
    # topic names (prefix is added by `topic()`)
    manifest_topic: str = "parcels.manifest"
    entries_topic: str = "parcels.entries"
    dispositions_topic: str = "targeting.dispositions"
    holds_topic: str = "targeting.holds"
    decisions_topic: str = "parcels.decisions"
    deadletter_topic: str = "parcels.deadletter"
    control_topic: str = "models.control"
    filers_topic: str = "targeting.filers"  # each filer's current scorecard (compacted)
    # scoring
    batch_size: int = 2000
    # per stage: the longest a record waits for its batch to fill. 25 ms against 50 at
    # 1,000 records/s exactly-once, alternating: hold p99 lower in 3 pairs of 3 (RESULTS.md)
    batch_within_s: float = 0.025
    # the join's input is held back while this many stage envelopes wait on the worker's
    # partitions, until half as many do (streams/backpressure.py); 0: never held
    stage_backlog: int = 160
    # OpenMP threads per model call: scoring batches are small, so more threads mostly spin
    model_threads: int = 1
    model_dir: Path = field(default=ROOT / "artifacts" / "models")
    model_version: str = ""  # empty: the promoted one, else the newest in model_dir
    # JSON overriding the artifact's thresholds, e.g. {"fentanyl": {"hold": 0.2}}
    thresholds: str = ""
    max_record_bytes: int = 256 * 1024
    bill_ttl_s: float = 30 * 86_400.0  # bills not seen for this long are forgotten
    bill_sweep_s: float = 600.0
    # records whose event time is further ahead of the wall clock go to the dead letters
    # (clock skew and a mislabelled time zone fit in a day; the year 9999 does not)
    max_event_ahead_s: float = 86_400.0
    # drift: PSI over the parcels scored in the last drift_window_s, shown once the window
    # holds drift_min_count of them (fewer say little about a distribution)
    drift_window_s: float = 3600.0
    drift_min_count: int = 1000
    # worker
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    store: str = "rocksdb://"  # rocksdict; memory:// for throwaway runs
    data_dir: Path = field(default=ROOT / ".local" / "worker")
    # exactly_once: each batch's outputs, table writes and offsets in one transaction per
    # source partition, for read-committed readers (measured at 0.81x the throughput of
    # at_least_once, whose duplicates after a crash carry the same source, so readers can
    # drop them)
    processing_guarantee: str = "exactly_once"
    # how long the group waits for a silent worker before handing its partitions to others:
    # most of what a crash costs (Faust's default is 60 s); heartbeats run in Faust's own
    # consumer thread, so a long batch does not miss them
    session_timeout_s: float = 10.0
    log_level: str = "warning"
    # targeting rules and policy (TOML); empty: model only
    rules: str = str(ROOT / "deploy" / "rules.toml")
    # at most this many model-driven holds per category per hour (0: no cap); beyond it
    # they become reviews, so nothing is dropped
    hold_cap_per_hour: int = 0
    # keyed hashes for pseudonymised decisions: set a secret in production
    pseudonym_key: str = field(default="local-development-key", repr=False)
    # how every client connects (streams/security.py): PLAINTEXT, SSL, SASL_SSL, ...
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str = ""  # CA that signed the brokers' certificates (empty: system CAs)
    ssl_certfile: str = ""  # client certificate and key, for brokers that require them
    ssl_keyfile: str = ""
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)  # never printed with the settings

    def check(self) -> None:
        """Refuse settings that would promise what the worker does not do."""
        if self.processing_guarantee not in GUARANTEES:
            raise ValueError(
                f"PARCEL_RISK_PROCESSING_GUARANTEE={self.processing_guarantee}: "
                f"one of {', '.join(GUARANTEES)}"
            )
        if self.model_threads < 1:
            raise ValueError(f"PARCEL_RISK_MODEL_THREADS={self.model_threads}: at least 1")
        wrong = security.problems(
            self.security_protocol,
            self.ssl_cafile,
            self.sasl_mechanism,
            self.sasl_username,
            self.sasl_password,
        )
        if wrong:
            raise ValueError("; ".join(wrong))

    def topic(self, name: str) -> str:
        """Full topic name for a settings attribute like 'holds_topic'."""
        return self.topic_prefix + getattr(self, name)

    @property
    def bootstrap(self) -> str:
        return self.broker.removeprefix("kafka://")

    def threshold_overrides(self, base: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        """The artifact's thresholds with the configured overrides applied."""
        merged = {label: dict(t) for label, t in base.items()}
        if self.thresholds:
            for label, t in json.loads(self.thresholds).items():
                if label not in merged:
                    raise ValueError(f"PARCEL_RISK_THRESHOLDS: unknown label {label!r}")
                merged[label].update({k: float(v) for k, v in t.items()})
        return merged

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def from_env(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from PARCEL_RISK_<FIELD> variables, then explicit overrides (CLI flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get("PARCEL_RISK_" + f.name.upper())
        if raw is None:
            continue
        values[f.name] = _coerce(f.type, raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def to_env(s: Settings) -> dict[str, str]:
    """The PARCEL_RISK_* variables that give a worker process these settings."""
    default = Settings()
    return {
        "PARCEL_RISK_" + f.name.upper(): str(getattr(s, f.name))
        for f in fields(Settings)
        if getattr(s, f.name) != getattr(default, f.name)
    }


def _coerce(typ: Any, raw: str) -> Any:
    t = str(typ)
    if t == "int":
        return int(raw)
    if t == "float":
        return float(raw)
    if t == "Path":
        return Path(raw)
    return raw

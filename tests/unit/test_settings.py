"""Settings: environment parsing and refusing promises the worker cannot keep."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.security import connection, faust_credentials
from streams.settings import ROOT, Settings, from_env, to_env


def test_environment_overrides_defaults_with_types() -> None:
    s = from_env({"PARCEL_RISK_PARTITIONS": "16", "PARCEL_RISK_SESSION_TIMEOUT_S": "6.5"})
    assert s.partitions == 16 and s.session_timeout_s == 6.5
    assert from_env({}, partitions=3).partitions == 3


def test_both_guarantees_are_accepted_and_nothing_else() -> None:
    assert Settings().processing_guarantee == "exactly_once"  # its cost is measured: README
    Settings(processing_guarantee="at_least_once").check()
    Settings().check()
    with pytest.raises(ValueError, match="one of at_least_once, exactly_once"):
        Settings(processing_guarantee="exactly-once").check()


def test_worker_exits_with_a_clear_error_for_an_unknown_guarantee() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker"],
        env={"PARCEL_RISK_PROCESSING_GUARANTEE": "at_most_once", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "one of at_least_once, exactly_once" in " ".join((done.stderr + done.stdout).split())


def test_settings_round_trip_through_the_environment() -> None:
    s = Settings(partitions=3, batch_within_s=0.2, topic_prefix="x.", security_protocol="SSL")
    assert from_env(to_env(s)) == s
    assert to_env(Settings()) == {}


def test_secrets_are_not_printed_with_the_settings() -> None:
    s = Settings(sasl_password="hunter2-scram", pseudonym_key="k3y-secret")
    assert "hunter2-scram" not in repr(s) and "k3y-secret" not in repr(s)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"security_protocol": "TLS"}, "is not one of PLAINTEXT"),
        ({"security_protocol": "SASL_SSL"}, "needs a SASL username and password"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "MD5", "sasl_username": "u",
             "sasl_password": "p"},
            "SASL mechanism 'MD5'",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
             "sasl_username": "u", "sasl_password": "p"},
            "password in clear",
        ),
        ({"ssl_cafile": "/etc/ca.pem"}, "does not use TLS"),
    ],
)  # fmt: skip
def test_unusable_security_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**changes).check()
    Settings(
        security_protocol="SASL_SSL", sasl_username="u", sasl_password="p", ssl_cafile="/ca.pem"
    ).check()


def test_client_options_carry_tls_and_scram() -> None:
    s = Settings(
        broker="kafka://b:9093", security_protocol="SASL_SSL", sasl_username="u", sasl_password="p"
    )
    opts = connection(s)
    assert opts["bootstrap_servers"] == "b:9093" and opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512" and opts["sasl_plain_password"] == "p"
    assert opts["ssl_context"].check_hostname  # the broker's name is verified
    creds = faust_credentials(s)
    assert creds is not None and creds.protocol.value == "SASL_SSL"
    assert faust_credentials(Settings()) is None
    assert connection(Settings()) == {"bootstrap_servers": "127.0.0.1:9092",
                                      "security_protocol": "PLAINTEXT"}  # fmt: skip


def test_cli_refuses_sasl_without_credentials() -> None:
    env = to_env(Settings(security_protocol="SASL_SSL", sasl_username="", topic_prefix="x."))
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "holds", "--json"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "SASL_SSL needs a SASL username and password" in done.stderr

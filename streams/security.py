"""How every Kafka client of the project connects: plaintext, TLS, SASL (SCRAM) over TLS.

One place turns the settings into client options, so the worker (Faust), the feed, the
analysts' `holds` reader, the exporter and the admin calls all connect the same way.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.helpers import create_ssl_context

if TYPE_CHECKING:
    from streams.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


def problems(protocol: str, cafile: str, mechanism: str, username: str, password: str) -> list[str]:
    """What is wrong with a security configuration (empty: usable)."""
    out = []
    if protocol not in PROTOCOLS:
        out.append(f"security protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol.startswith("SASL"):
        if mechanism not in MECHANISMS:
            out.append(f"SASL mechanism {mechanism!r} is not one of {', '.join(MECHANISMS)}")
        if not username or not password:
            out.append(f"{protocol} needs a SASL username and password")
        if mechanism == "PLAIN" and protocol == "SASL_PLAINTEXT":
            out.append("SASL PLAIN without TLS sends the password in clear: use SASL_SSL")
    if cafile and protocol not in ("SSL", "SASL_SSL"):
        out.append(f"a CA file is set but {protocol} does not use TLS")
    return out


def tls_context(cafile: str, certfile: str, keyfile: str) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name; a client certificate if given."""
    return create_ssl_context(
        cafile=cafile or None, certfile=certfile or None, keyfile=keyfile or None
    )


def connection(s: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    return {"bootstrap_servers": s.bootstrap, **client_options(s)}


def reader(s: Settings) -> dict[str, Any]:
    """`connection` for a consumer of the worker's outputs: committed messages only, so an
    exactly-once worker's aborted transactions are never read (the same as any message
    under at-least-once, which writes no transactions)."""
    return {**connection(s), "isolation_level": "read_committed"}


def client_options(s: Settings) -> dict[str, Any]:
    """The security part of `connection`."""
    opts: dict[str, Any] = {"security_protocol": s.security_protocol}
    if s.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = tls_context(s.ssl_cafile, s.ssl_certfile, s.ssl_keyfile)
    if s.security_protocol.startswith("SASL"):
        opts.update(
            sasl_mechanism=s.sasl_mechanism,
            sasl_plain_username=s.sasl_username,
            sasl_plain_password=s.sasl_password,
        )
    return opts


def faust_credentials(s: Settings) -> faust.types.auth.CredentialsT | None:
    """The same connection for Faust's own clients (`broker_credentials`)."""
    opts = client_options(s)
    if s.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=s.sasl_username,
            password=s.sasl_password,
            mechanism=s.sasl_mechanism,
            ssl_context=opts.get("ssl_context"),
        )
    if s.security_protocol == "SSL":
        return faust.SSLCredentials(opts["ssl_context"])
    return None

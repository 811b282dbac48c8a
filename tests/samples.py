"""Sample v1 records for tests: one valid manifest and its matching entry."""

from __future__ import annotations

from typing import Any

from models.records import entry_check_digit, mawb_check_digit


def _mawb(prefix: str = "784", serial: str = "1234567") -> str:
    return prefix + serial + str(mawb_check_digit(serial))


def _entry_number(filer: str = "AB1", serial: str = "0012345") -> str:
    return filer + serial + str(entry_check_digit(filer, serial))


PARTY = {
    "name": "Shenzhen Joy Trading Co Ltd",
    "address": "12 Bao'an Rd",
    "city": "Shenzhen",
    "country": "CN",
}
CONSIGNEE = {
    "name": "Maria Lopez",
    "address": "55 Elm St",
    "city": "Austin",
    "state": "TX",
    "zip": "73301",
    "country": "US",
}
MANIFEST: dict[str, Any] = {
    "schema_version": 1,
    "event_time": "2025-03-01T10:00:00+00:00",
    "hawb": "HX12345678",
    "mawb": _mawb(),
    "carrier": "CK",
    "flight": "CK221",
    "origin_airport": "PVG",
    "arrival_port": "2720",
    "arrival_date": "2025-03-02",
    "shipper": PARTY,
    "consignee": CONSIGNEE,
    "description": "running shoes",
    "pieces": 1,
    "weight_kg": 0.8,
    "declared_value": 24.5,
    "currency": "USD",
    "hts": "6404.11",
}
ENTRY: dict[str, Any] = {
    "schema_version": 1,
    "event_time": "2025-03-01T12:00:00Z",
    "entry_number": _entry_number(),
    "entry_type": "86",
    "filer_code": "AB1",
    "hawb": "HX12345678",
    "mawb": _mawb(),
    "port_of_entry": "2720",
    "estimated_arrival": "2025-03-02",
    "shipper": PARTY,
    "consignee": CONSIGNEE,
    "lines": [
        {
            "hts": "6404110000",
            "description": "running shoes",
            "country_of_origin": "CN",
            "quantity": 1,
            "value_usd": 24.5,
        }
    ],
}


# the de minimis policy the rules tests share (CN/HK excluded from the 2025 suspension on)
POLICY_TOML = """
[policy]
de_minimis_usd = 800
de_minimis_entry_types = ["86"]
[[policy.excluded_origins]]
countries = ["CN", "HK"]
from = "2025-05-02"
"""

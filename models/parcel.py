"""Parcel facts: what one bill says, each computed here and nowhere else.

A parcel is seen through its view: the first-seen manifest (the carrier's house bill) and
the first-seen entry (the broker's declaration), either of which may still be missing.
Where both speak, the entry speaks for the parcel: it is the declaration CBP acts on (the
value claimed for de minimis, the 10-digit HTS, the parties as declared, under penalty),
while the manifest is the carrier's transport record. The manifest speaks until the entry
arrives; where the two differ, the difference is a feature (features.py), never a choice
made here. The worker's stages, the features, the rules, the reasons and the offline data
sets all ask this module, so a fact cannot mean one thing online and another offline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, TypedDict

from models import nomenclature as hs
from models.records import Record

DE_MINIMIS_USD = 800.0  # 19 USC 1321, per person per day

# Approximate reference rates to USD: declared values are almost always USD; other
# currencies are converted roughly, and an unknown currency leaves the value missing.
USD_PER = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CNY": 0.14,
    "HKD": 0.128,
    "JPY": 0.0067,
    "KRW": 0.00073,
    "CAD": 0.73,
    "INR": 0.012,
    "TWD": 0.031,
    "VND": 0.00004,
}

# Legal forms and generic trade words of company names: a name with one is a business's,
# and a shipper's key leaves them out ("Shenzhen JOY Trading Co., Ltd." is "shenzhen joy").
# Words that tell two companies apart ("technology", "industrial") are not among them.
COMPANY_WORDS = frozenset(
    {"co", "company", "ltd", "limited", "inc", "incorporated", "llc", "corp", "corporation",
     "gmbh", "ag", "sa", "srl", "bv", "plc", "pty", "trading", "international", "intl",
     "group", "holdings", "ecommerce", "commerce", "store", "shop"}
)  # fmt: skip
_ADDRESS_WORDS = {
    "street": "st",
    "avenue": "ave",
    "road": "rd",
    "drive": "dr",
    "apartment": "apt",
    "suite": "ste",
    "boulevard": "blvd",
    "lane": "ln",
    "court": "ct",
    "place": "pl",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "unit": "apt",
    "number": "",
}
_NON_ALNUM = re.compile(r"[^a-z0-9 ]+")


class ParcelView(TypedDict, total=False):
    """What the scorer knows about one bill (HAWB) at one moment."""

    hawb: str
    manifest: Record | None
    entry: Record | None
    shipper_history: Mapping[str, float] | None
    consignee_history: Mapping[str, float] | None
    filer_history: Mapping[str, float] | None  # the entry's filer (models/filers.py)


def primary(view: ParcelView) -> Record:
    """The record that speaks for the parcel: the entry once filed, else the manifest. A
    view with neither is no parcel (ValueError): every fact of it would be made up."""
    rec = view.get("entry") or view.get("manifest")
    if rec is None:
        raise ValueError(f"parcel {view.get('hawb')}: neither a manifest nor an entry")
    return rec


def event_time(view: ParcelView) -> str:
    """The parcel's event time (ISO 8601): its speaking record's."""
    return str(primary(view)["event_time"])


# -- parties -------------------------------------------------------------------------------


def parties(view: ParcelView) -> tuple[Record, Record]:
    """Shipper and consignee as the speaking record names them."""
    rec = primary(view)
    return rec["shipper"], rec["consignee"]


def _words(text: str) -> list[str]:
    text = text.lower().replace("&", " and ").replace("e-commerce", "ecommerce")
    return _NON_ALNUM.sub(" ", text).split()


def normalise(text: str) -> str:
    """A name or address as compared: case, punctuation and spacing do not count."""
    return " ".join(_words(text))


@lru_cache(maxsize=1 << 16)  # a shipper's parcels come one after another
def shipper_key(name: str, country: str) -> str:
    """'Shenzhen JOY Trading Co., Ltd.' and 'shenzhen joy' in CN are the same shipper."""
    words = _words(name)
    return (
        " ".join([w for w in words if w not in COMPANY_WORDS] or words)
        + "|"
        + (country.strip().upper())
    )


@lru_cache(maxsize=1 << 16)
def consignee_key(address: str, zip_code: str | None) -> str:
    """A delivery address, tolerant of case, punctuation and street-type spelling."""
    words = [_ADDRESS_WORDS.get(w, w) for w in _words(address)]
    return " ".join(w for w in words if w) + "|" + (zip_code or "").strip()[:5]


def keys(view: ParcelView) -> tuple[str, str]:
    """The parcel's shipper and consignee keys: whose history it reads and adds to."""
    shipper, consignee = parties(view)
    return (
        shipper_key(shipper["name"], shipper["country"]),
        consignee_key(consignee["address"], consignee.get("zip")),
    )


@lru_cache(maxsize=1 << 16)  # a shipper's name comes with each of its parcels
def is_business(name: str) -> bool:
    """A company's name rather than a private person's."""
    return not COMPANY_WORDS.isdisjoint(_words(name))


# -- value, weight, goods ------------------------------------------------------------------


def usd(amount: float, currency: str) -> float:
    rate = USD_PER.get(currency)
    return amount * rate if rate is not None else math.nan


def manifest_value_usd(manifest: Mapping[str, Any]) -> float:
    return usd(manifest["declared_value"], manifest["currency"])


def entry_value_usd(entry: Mapping[str, Any]) -> float:
    """Total declared value of an entry (its lines, in USD by the schema)."""
    return float(sum(line["value_usd"] for line in entry["lines"]))


def value_usd(view: ParcelView) -> float:
    """The declared value in USD (NaN when the currency is unknown)."""
    e = view.get("entry")
    return entry_value_usd(e) if e is not None else manifest_value_usd(primary(view))


def weight_kg(view: ParcelView) -> float:
    """Gross weight: only the manifest has it."""
    m = view.get("manifest")
    return float(m["weight_kg"]) if m is not None else math.nan


def hs_code(view: ParcelView) -> str:
    """The most specific HS code known ('' if none): the entry's first line, else the
    manifest's optional one."""
    e = view.get("entry")
    return str(e["lines"][0]["hts"]) if e is not None else str(primary(view).get("hts") or "")


def description(view: ParcelView) -> str:
    """What the goods are said to be: the entry's line descriptions (each once), else the
    manifest's."""
    e = view.get("entry")
    if e is not None:
        return ", ".join(dict.fromkeys(line["description"] for line in e["lines"]))
    return str(primary(view)["description"])


def words(text: str) -> frozenset[str]:
    """A description's words as the vague and brand tests read them."""
    return frozenset(text.lower().replace(",", " ").split())


def vague(text: str) -> bool:
    """A description CBP would reject as too vague: three words or fewer, one like 'gift'."""
    w = words(text)
    return len(w) <= 3 and not w.isdisjoint(hs.VAGUE_TERMS)

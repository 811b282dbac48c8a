"""Synthetic parcel traffic with planted risks, following design.md's public facts.

No labelled parcel data is public, so the project generates its own: a heavy-tailed shipper
population (a few marketplace giants, a long tail of small and new shippers), US consignees
(some receiving many parcels a day), products from the real HS 2022 nomenclature with
plausible values and weights, and planted fentanyl, counterfeit and undervaluation cases.
Ground truth is returned separately (`Label`), never inside the records.

It is made hard on purpose: bad actors also send clean parcels and often mimic normal
traffic; legitimate parcels can look unusual (industrial 8479.89 parts, cheap goods,
genuine branded goods, values near $800); and some labels are noisy.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models import nomenclature as hs
from models.records import CATEGORIES, entry_check_digit, mawb_check_digit


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 0
    start: datetime = datetime(2025, 3, 1, tzinfo=UTC)
    # event-time spacing: a data set is a sample of national traffic spread over months
    parcels_per_second: float = 0.05
    n_shippers: int = 20_000
    fentanyl_rate: float = 0.002
    counterfeit_rate: float = 0.03
    undervaluation_rate: float = 0.05
    label_noise: float = 0.02
    manifest_only_fraction: float = 0.08
    entry_first_fraction: float = 0.05
    bad_fraction: float = 0.0
    # time between a parcel's manifest and its entry, as a share of real traffic's (median
    # 90 min, at most 12 h). Entries wait in memory until their time, so a live feed
    # shortens it (streams/feed.py) to keep what waits bounded and the demo's rescoring seen
    entry_lag_scale: float = 1.0
    suspension_cn_hk: date = date(2025, 5, 2)
    suspension_all: date = date(2025, 8, 29)


@dataclass(frozen=True)
class Event:
    kind: str  # "manifest" or "entry"
    key: str  # HAWB
    value: bytes
    event_time: datetime
    bad_reason: str | None = None  # for malformed records: the field the validator names


@dataclass(frozen=True)
class Label:
    hawb: str
    event_time: str
    fentanyl: int
    counterfeit: int
    undervaluation: int
    true_value_usd: float
    declared_value_usd: float


# --- vocabularies -----------------------------------------------------------------------

# chapter -> typical value per kg (USD) and weight median (kg) for e-commerce parcels
CHAPTERS: dict[str, tuple[float, float]] = {
    "09": (30, 0.3),
    "21": (15, 0.5),
    "33": (45, 0.3),
    "34": (15, 0.6),
    "39": (10, 0.5),
    "42": (60, 0.7),
    "49": (12, 0.4),
    "61": (40, 0.4),
    "62": (45, 0.5),
    "63": (12, 0.8),
    "64": (35, 0.9),
    "65": (25, 0.3),
    "71": (150, 0.1),
    "73": (8, 1.0),
    "82": (15, 0.6),
    "83": (12, 0.4),
    "84": (50, 1.5),
    "85": (80, 0.5),
    "90": (100, 0.2),
    "91": (250, 0.15),
    "94": (15, 1.5),
    "95": (20, 0.6),
    "96": (10, 0.3),
}
COUNTERFEIT_CODES = (
    "420221",
    "420222",
    "420231",
    "640411",
    "640399",
    "610910",
    "611020",
    "620342",
    "711319",
    "711719",
    "910211",
    "910111",
    "851762",
    "851830",
    "330300",
    "330499",
    "900410",
    "950300",
)
PRESS_CODES = ("847989", "847990")
PRECURSOR_CODES = ("293339", "293331", "293332")
COVER_CODES = {
    "170490": "herbal candy",
    "392690": "plastic decorations",
    "420292": "sticker storage bag",
    "210690": "vitamins",
    "330499": "cosmetic sample",
    "090240": "tea sample",
}
BRANDS = (
    "NIKE",
    "ADIDAS",
    "GUCCI",
    "LOUIS VUITTON",
    "ROLEX",
    "CHANEL",
    "APPLE",
    "BEATS",
    "RAY-BAN",
    "PANDORA",
    "MICHAEL KORS",
    "LEGO",
)
BRAND_WORD = {
    "42": "designer handbag",
    "64": "sneakers",
    "61": "shirt",
    "62": "jacket",
    "71": "bracelet",
    "91": "luxury watch",
    "85": "earphones",
    "33": "perfume",
    "90": "sunglasses",
    "95": "toy set",
}
VAGUE = ("gift", "daily necessities", "accessories", "parts", "sample", "apparel", "goods")
ORIGINS = (
    ("CN", 0.55),
    ("HK", 0.15),
    ("VN", 0.04),
    ("IN", 0.04),
    ("TR", 0.03),
    ("KR", 0.03),
    ("JP", 0.03),
    ("GB", 0.03),
    ("DE", 0.03),
    ("TW", 0.03),
    ("TH", 0.02),
    ("US", 0.01),
    ("IT", 0.01),
    ("FR", 0.0),
)
AIRPORTS = {
    "CN": ("PVG", "CAN", "SZX", "PEK", "CGO"),
    "HK": ("HKG",),
    "VN": ("SGN", "HAN"),
    "IN": ("BOM", "DEL"),
    "TR": ("IST",),
    "KR": ("ICN",),
    "JP": ("NRT", "KIX"),
    "GB": ("LHR",),
    "DE": ("FRA", "LEJ"),
    "TW": ("TPE",),
    "TH": ("BKK",),
    "US": ("JFK",),
    "IT": ("MXP",),
    "FR": ("CDG",),
}
CITIES = {
    "CN": ("Shenzhen", "Guangzhou", "Yiwu", "Hangzhou", "Dongguan", "Ningbo"),
    "HK": ("Hong Kong", "Kowloon"),
    "VN": ("Ho Chi Minh City", "Hanoi"),
    "IN": ("Mumbai", "Delhi"),
    "TR": ("Istanbul",),
    "KR": ("Seoul", "Incheon"),
    "JP": ("Tokyo", "Osaka"),
    "GB": ("London", "Manchester"),
    "DE": ("Hamburg", "Leipzig"),
    "TW": ("Taipei",),
    "TH": ("Bangkok",),
    "US": ("New York",),
    "IT": ("Milan",),
    "FR": ("Paris",),
}
CARRIERS = (
    ("784", "CZ"),
    ("999", "CA"),
    ("160", "CX"),
    ("297", "CI"),
    ("180", "KE"),
    ("020", "LH"),
    ("176", "EK"),
    ("023", "FX"),
    ("406", "5X"),
)
PORTS = ("4701", "2720", "3901", "5206", "1704", "3126", "4601", "2704")


@dataclass(frozen=True)
class Filer:
    """A customs broker as the generator plays it: its filer code, share of the entries,
    and quality (clean, trusted or sloppy)."""

    code: str
    weight: float
    quality: str = "clean"  # "clean", "trusted" (C-TPAT; listed in deploy/rules.toml), "sloppy"
    late: float = 0.0  # share of its entries filed after arrival
    no_eta: float = 0.0  # share of its entries without the estimated arrival
    invalid: float = 0.0  # share of its entries malformed (when malformed records are on)


# Most filers are clean, some trusted, a few sloppy: those file late, leave out the estimated
# arrival, file malformed entries, and bad actors prefer them (more violative entries).
FILERS = (
    Filer("AB1", 0.20, "trusted"),
    Filer("EZ3", 0.14, "trusted"),
    Filer("T7C", 0.06, "trusted"),
    Filer("M7P", 0.14),
    Filer("K2D", 0.10),
    Filer("B5R", 0.08),
    Filer("C8N", 0.06),
    Filer("D3W", 0.05),
    Filer("H6F", 0.04),
    Filer("P2S", 0.03),
    Filer("9XK", 0.06, "sloppy", late=0.25, no_eta=0.08, invalid=0.04),
    Filer("Q4L", 0.04, "sloppy", late=0.15, no_eta=0.05, invalid=0.03),
)
BAD_ACTORS_AT_SLOPPY = 0.5  # share of bad actors that file through a sloppy filer
US_PLACES = (
    ("Austin", "TX", "73301"),
    ("Houston", "TX", "77002"),
    ("Miami", "FL", "33101"),
    ("Orlando", "FL", "32801"),
    ("Brooklyn", "NY", "11201"),
    ("Chicago", "IL", "60601"),
    ("Los Angeles", "CA", "90001"),
    ("San Jose", "CA", "95112"),
    ("Phoenix", "AZ", "85001"),
    ("Seattle", "WA", "98101"),
    ("Denver", "CO", "80202"),
    ("Atlanta", "GA", "30303"),
    ("Columbus", "OH", "43004"),
    ("Newark", "NJ", "07102"),
)
FIRST = (
    "Maria",
    "James",
    "Wei",
    "Olivia",
    "Jose",
    "Aisha",
    "Liam",
    "Emma",
    "Noah",
    "Sofia",
    "Daniel",
    "Grace",
    "Ahmed",
    "Chloe",
    "Lucas",
    "Mia",
    "Ethan",
    "Ava",
    "Mateo",
    "Zoe",
)
LAST = (
    "Lopez",
    "Smith",
    "Chen",
    "Johnson",
    "Garcia",
    "Khan",
    "Brown",
    "Nguyen",
    "Davis",
    "Martinez",
    "Wilson",
    "Patel",
    "Kim",
    "Taylor",
    "Anderson",
    "Thomas",
    "Moore",
    "Lee",
)
STREETS = (
    "Elm",
    "Oak",
    "Maple",
    "Pine",
    "Cedar",
    "Main",
    "Park",
    "Lake",
    "Hill",
    "Sunset",
    "River",
    "Washington",
    "Lincoln",
    "Jackson",
    "Highland",
    "Church",
)
STREET_TYPES = ("St", "Ave", "Rd", "Dr", "Ln", "Blvd", "Ct")
FAKE_NAMES = ("Test Test", "AAA", "John123", "X", "Customer", "Mr Buyer")
WORDS = (
    "Bright",
    "Joy",
    "Star",
    "Golden",
    "Quick",
    "Honest",
    "Harmony",
    "Lucky",
    "Sun",
    "Dragon",
    "Ocean",
    "Peak",
    "Smart",
    "Happy",
    "Evergreen",
    "Unity",
    "Prime",
    "Jade",
)
SUFFIXES = (
    "Trading Co Ltd",
    "Technology Co Ltd",
    "E-commerce Ltd",
    "Industrial Co",
    "Store",
    "International Ltd",
    "Supply Chain Co",
)
MARKETPLACES = ("ShopFast", "BuyNow Global", "DealHub", "MegaMart Online")


def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(0, len(seq)))]


def _product_description(code_desc: str) -> str:
    """A short product phrase from an HS description ('Footwear; with outer soles...')."""
    first = code_desc.split(";")[0].split(",")[0].split("(")[0].strip().lower()
    words = first.split()
    return " ".join(words[:4]) if words else "goods"


@dataclass
class _Shipper:
    name: str
    address: str
    city: str
    country: str
    airport: str
    products: np.ndarray  # indexes into the product catalogue
    price: float  # multiplier on the product's typical value
    start: float  # share of the run before the shipper is active (new shippers)
    bad: str | None  # risk this bad actor plants, if any
    residential: bool
    filer: Filer | None = None  # the broker that files its entries


class TrafficGenerator:
    """Deterministic for a seed; `events(n)` then `labels()` give records and truth.

    `keep_labels=False` keeps no label (an endless feed would hold every one): the labels
    are then only what `parcels()` yields, or what `label_sink` receives as they are made.
    """

    def __init__(
        self,
        config: GeneratorConfig,
        keep_labels: bool = True,
        label_sink: Callable[[Label], None] | None = None,
    ) -> None:
        if config.entry_lag_scale <= 0:
            raise ValueError(f"entry_lag_scale must be > 0, not {config.entry_lag_scale}")
        self.c = config
        self.keep_labels = keep_labels
        self.label_sink = label_sink
        self.rng = np.random.default_rng(config.seed)
        self._labels: list[Label] = []
        self._build_catalogue()
        self._build_shippers()
        # filers draw from their own stream, so they leave the rest of the traffic as it was
        self.filer_rng = np.random.default_rng((config.seed, 321))
        self._assign_filers()
        self._hawb_base = int(self.rng.integers(36**6, 36**7))

    # -- world ------------------------------------------------------------------------

    def _build_catalogue(self) -> None:
        codes = [(c, d) for c, d in hs.all_subheadings() if c[:2] in CHAPTERS]
        self.codes = [c for c, _ in codes]
        self.descs = [_product_description(d) for _, d in codes]
        self.code_index = {c: i for i, c in enumerate(self.codes)}
        rng = self.rng
        base = np.array([CHAPTERS[c[:2]][0] for c in self.codes])
        wmed = np.array([CHAPTERS[c[:2]][1] for c in self.codes])
        self.vpk = base * rng.lognormal(0.0, 0.5, len(self.codes))  # heading-level spread
        self.wmed = wmed * rng.lognormal(0.0, 0.3, len(self.codes))
        by_chapter: dict[str, list[int]] = {}
        for i, c in enumerate(self.codes):
            by_chapter.setdefault(c[:2], []).append(i)
        self.by_chapter = {k: np.array(v) for k, v in by_chapter.items()}
        self.counterfeit_idx = np.array(
            [self.code_index[c] for c in COUNTERFEIT_CODES if c in self.code_index]
        )

    def _build_shippers(self) -> None:
        rng, c = self.rng, self.c
        n = c.n_shippers
        weights = 1.0 / np.arange(1, n + 1) ** 1.1  # Zipf: marketplaces dominate volume
        self.shipper_p = weights / weights.sum()
        countries = [o for o, _ in ORIGINS]
        cp = np.array([p for _, p in ORIGINS])
        cum_cp = np.cumsum(cp / cp.sum())
        chapters = list(CHAPTERS)
        self.shippers: list[_Shipper] = []
        # bad actors: in the long tail, not among the giants; recruited until their share of
        # volume lets them carry about half of each risk at a 40% risky rate
        risks = {
            "fentanyl": c.fentanyl_rate,
            "counterfeit": c.counterfeit_rate,
            "undervaluation": c.undervaluation_rate,
        }
        kept = 1.0 - 5 * c.label_noise  # label noise drops some positives: plant a little more
        bad_of = np.full(n, None, dtype=object)
        pool = rng.permutation(np.arange(50, n))
        taken = 0
        for risk, rate in risks.items():
            target = 0.5 * rate / kept / 0.4 / 0.7  # /0.7: bad actors are active ~70% of a run
            share = 0.0
            while share < target and taken < len(pool):
                bad_of[pool[taken]] = risk
                share += float(self.shipper_p[pool[taken]])
                taken += 1
        for i in range(n):
            country = countries[int(np.searchsorted(cum_cp, rng.random()))]
            residential = rng.random() < 0.12
            bad = bad_of[i]
            if bad == "fentanyl":
                country = str(rng.choice(["CN", "HK", "IN"], p=[0.7, 0.15, 0.15]))
                residential = rng.random() < 0.5
            elif bad == "counterfeit":
                country = str(rng.choice(["CN", "HK", "TR"], p=[0.6, 0.3, 0.1]))
            city = _pick(rng, CITIES[country])
            if residential:
                name = f"{_pick(rng, FIRST)} {_pick(rng, LAST)}"
                address = (
                    f"Room {rng.integers(100, 2999)}, {rng.integers(1, 300)} "
                    f"{_pick(rng, STREETS)} Road"
                )
            else:
                name = (
                    f"{city.split()[0]} {_pick(rng, WORDS)} {_pick(rng, WORDS)} "
                    f"{_pick(rng, SUFFIXES)}"
                )
                address = f"{rng.integers(1, 999)} {_pick(rng, WORDS)} Industrial Park"
            home = rng.choice(chapters, size=int(rng.integers(1, 4)), replace=False)
            products = np.concatenate(
                [
                    rng.choice(
                        self.by_chapter[h], size=min(6, len(self.by_chapter[h])), replace=False
                    )
                    for h in home
                ]
            )
            self.shippers.append(
                _Shipper(
                    name=name,
                    address=address,
                    city=city,
                    country=country,
                    airport=_pick(rng, AIRPORTS[country]),
                    products=products,
                    # discount sellers price everything far below the usual, legitimately: a
                    # low value per kg alone must not give undervaluation away
                    price=float(rng.uniform(0.02, 0.15))
                    if rng.random() < 0.15 and not bad
                    else float(rng.lognormal(0.0, 0.3)),
                    start=float(rng.random() * 0.6) if (bad or rng.random() < 0.3) else 0.0,
                    bad=bad,
                    residential=residential,
                )
            )
        # risky parcel probability for bad actors, so that about half of each risk's
        # parcels come from them and half from everyone (opportunists, one-offs)
        active = 1.0 - np.array([sh.start for sh in self.shippers])
        self.bad_p: dict[str, float] = {}
        for risk, rate in risks.items():
            mask = bad_of == risk
            share = float(
                (self.shipper_p[mask] * active[mask]).sum() / (self.shipper_p * active).sum()
            )
            self.bad_p[risk] = min(0.8, 0.5 * rate / kept / max(share, 1e-9))
        self.background = {risk: 0.5 * rate / kept for risk, rate in risks.items()}
        self.cum_p = np.cumsum(self.shipper_p)

    def _assign_filers(self) -> None:
        """Each shipper files through one broker, by the brokers' shares; bad actors prefer
        sloppy ones and are never taken on by a trusted one."""
        rng = self.filer_rng
        weights = np.array([f.weight for f in FILERS])
        untrusted = np.array([f.quality != "trusted" for f in FILERS])
        sloppy = [f for f in FILERS if f.quality == "sloppy"]
        for sh in self.shippers:
            if sh.bad and rng.random() < BAD_ACTORS_AT_SLOPPY:
                sh.filer = sloppy[int(rng.integers(0, len(sloppy)))]
            else:
                w = weights * untrusted if sh.bad else weights
                sh.filer = FILERS[int(rng.choice(len(FILERS), p=w / w.sum()))]

    # -- parcels ----------------------------------------------------------------------

    def _consignee(self, day: int, structuring: bool, fake: bool) -> dict[str, str]:
        rng = self.rng
        if structuring:  # a handful of addresses per day take several parcels each
            k = int(rng.integers(0, 8))
            r = np.random.default_rng((self.c.seed, day, k))
        else:
            r = np.random.default_rng((self.c.seed, int(rng.integers(0, 400_000))))
        city, state, zip_code = US_PLACES[int(r.integers(0, len(US_PLACES)))]
        name = f"{FIRST[int(r.integers(0, len(FIRST)))]} {LAST[int(r.integers(0, len(LAST)))]}"
        if fake:
            name = FAKE_NAMES[int(rng.integers(0, len(FAKE_NAMES)))]
        return {
            "name": name,
            "address": f"{int(r.integers(1, 9999))} {STREETS[int(r.integers(0, 16))]} "
            f"{STREET_TYPES[int(r.integers(0, 7))]}",
            "city": city,
            "state": state,
            "zip": zip_code,
            "country": "US",
        }

    def _risk(self, sh: _Shipper) -> str | None:
        rng = self.rng
        if sh.bad and rng.random() < self.bad_p[sh.bad]:
            return sh.bad
        u = rng.random()
        for risk, p in self.background.items():
            if u < p:
                return risk
            u -= p
        return None

    def _parcel(self, i: int, count: int) -> tuple[list[Event], Label]:
        rng, c = self.rng, self.c
        t = c.start + timedelta(seconds=(i + rng.random()) / c.parcels_per_second)
        while True:  # shippers that start later in the run are not active yet
            s_idx = min(int(np.searchsorted(self.cum_p, rng.random())), len(self.shippers) - 1)
            sh = self.shippers[s_idx]
            if sh.start * count <= i:
                break
        risk = self._risk(sh)
        mimic = risk is not None and rng.random() < 0.4
        p_idx = int(rng.choice(sh.products))
        price = sh.price
        desc: str | None = None
        fake_consignee = rng.random() < 0.01
        structuring = False
        business_consignee = rng.random() < 0.08
        if risk == "fentanyl":
            business_consignee = False
            fake_consignee = rng.random() < 0.3
            kind = rng.random()
            if kind < 0.35 and not mimic:
                p_idx = self.code_index[_pick(rng, PRESS_CODES)]
                desc = _pick(rng, ["tablet press", "die set", "machine parts", "mold"])
            elif kind < 0.55 and not mimic:
                p_idx = self.code_index.get(_pick(rng, PRECURSOR_CODES), p_idx)
                desc = _pick(rng, ["chemical reagent", "white powder", "intermediate"])
            else:  # pills under an innocuous code, half with a known cover phrase
                code = _pick(rng, list(COVER_CODES))
                p_idx = self.code_index.get(code, p_idx)
                desc = COVER_CODES[code] if rng.random() < 0.5 else None
        elif risk == "counterfeit" and len(self.counterfeit_idx):
            p_idx = int(rng.choice(self.counterfeit_idx))
            price *= float(rng.uniform(0.15, 0.5)) if not mimic else float(rng.uniform(0.5, 1))
            if rng.random() < (0.2 if mimic else 0.55):
                word = BRAND_WORD.get(self.codes[p_idx][:2], "item")
                desc = (
                    f"{_pick(rng, BRANDS)} {word}"
                    if rng.random() < 0.6
                    else f"{_pick(rng, BRANDS)} style {word}"
                )
        elif risk is None and rng.random() < 0.002:  # legit industrial machine parts
            p_idx = self.code_index[_pick(rng, PRESS_CODES)]
            business_consignee, price = True, price * 3
            desc = "spare parts for packaging machine"
        elif risk is None and rng.random() < 0.015 and len(self.counterfeit_idx):
            p_idx = int(rng.choice(self.counterfeit_idx))  # genuine branded goods
            price *= float(rng.uniform(1.5, 3.0))
            desc = f"{_pick(rng, BRANDS)} {BRAND_WORD.get(self.codes[p_idx][:2], 'item')}"
        code = self.codes[p_idx]
        if desc is None:
            desc = self.descs[p_idx] if rng.random() > 0.08 else _pick(rng, VAGUE)
        weight = float(np.clip(self.wmed[p_idx] * rng.lognormal(0, 0.6), 0.05, 60.0))
        true_value = float(
            np.clip(self.vpk[p_idx] * price * weight * rng.lognormal(0, 0.5), 1.0, 20_000.0)
        )
        manifest_value = entry_value = true_value
        if risk == "undervaluation":
            structuring = rng.random() < 0.25
            if rng.random() < 0.3:  # bunched just under the threshold
                true_value = float(rng.uniform(900, 4000))
                manifest_value = entry_value = float(rng.uniform(650, 799.99))
            else:
                f = rng.uniform(0.35, 0.6) if mimic else rng.uniform(0.04, 0.3)
                manifest_value = entry_value = true_value * float(f)
            if rng.random() < 0.4:  # the carrier manifested more than the broker entered
                manifest_value = true_value * float(rng.uniform(0.7, 1.0))
        elif rng.random() < 0.02:  # legit values near the threshold
            manifest_value = entry_value = true_value = float(rng.uniform(650, 799.99))
        elif rng.random() < 0.03:  # legit small differences (rounding, shipping, FX)
            entry_value = manifest_value * float(rng.uniform(0.9, 1.0))
        day = int((t - c.start).total_seconds() // 86_400)
        consignee = self._consignee(day, structuring, fake_consignee)
        if business_consignee:
            consignee["name"] = f"{_pick(rng, WORDS)} {_pick(rng, ['LLC', 'Inc', 'Corp'])}"
        hawb = self._hawb(i)
        events = self._records(
            i, hawb, t, sh, consignee, code, desc, weight, manifest_value, entry_value
        )
        flags = {k: int(risk == k) for k in CATEGORIES}
        if risk and rng.random() < c.label_noise * 5:  # an exam that missed it
            flags[risk] = 0
        elif not risk and rng.random() < c.label_noise * 0.05:  # a finding on a clean one
            flags[_pick(rng, CATEGORIES)] = 1
        label = Label(
            hawb=hawb,
            event_time=min(e.event_time for e in events).isoformat(),
            true_value_usd=round(true_value, 2),
            declared_value_usd=round(entry_value, 2),
            **flags,
        )
        return events, label

    def _hawb(self, i: int) -> str:
        n = self._hawb_base * 10_000_000 + i
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        out = ""
        while n:
            n, r = divmod(n, 36)
            out = digits[r] + out
        return out[-12:]

    def _records(
        self,
        i: int,
        hawb: str,
        t: datetime,
        sh: _Shipper,
        consignee: dict,
        code: str,
        desc: str,
        weight: float,
        manifest_value: float,
        entry_value: float,
    ) -> list[Event]:
        rng, c = self.rng, self.c
        prefix, carrier = CARRIERS[(i // 200) % len(CARRIERS)]
        serial = f"{(i // 200) % 10_000_000:07d}"
        mawb = prefix + serial + str(mawb_check_digit(serial))
        port = PORTS[(i // 200) % len(PORTS)]
        shipper = {"name": sh.name, "address": sh.address, "city": sh.city, "country": sh.country}
        out: list[Event] = []
        manifest_t = t
        manifest: dict[str, Any] = {
            "schema_version": 1,
            "event_time": manifest_t.isoformat(),
            "hawb": hawb,
            "mawb": mawb,
            "carrier": carrier,
            "flight": f"{carrier}{100 + (i // 200) % 800}",
            "origin_airport": sh.airport,
            "arrival_port": port,
            "arrival_date": (t + timedelta(hours=14)).date().isoformat(),
            "shipper": shipper,
            "consignee": consignee,
            "description": desc,
            "pieces": int(rng.integers(1, 4)) if rng.random() < 0.2 else 1,
            "weight_kg": round(weight, 3),
            "declared_value": round(manifest_value, 2),
            "currency": "USD",
        }
        if rng.random() < 0.6:
            manifest["hts"] = code if rng.random() < 0.7 else f"{code[:4]}.{code[4:]}"
        out.append(Event("manifest", hawb, orjson.dumps(manifest), manifest_t))
        if rng.random() >= c.manifest_only_fraction:
            filer = sh.filer or FILERS[0]
            late = self.filer_rng.random() < filer.late
            if rng.random() < c.entry_first_fraction:
                lead = float(rng.uniform(5, 60))
                entry_t = t - timedelta(minutes=lead * c.entry_lag_scale)
            else:
                lag = min(float(rng.lognormal(math.log(90), 0.8)), 12 * 60.0)
                entry_t = t + timedelta(minutes=lag * c.entry_lag_scale)
            if late:  # filed the day after arrival, 1 to 10 hours into it, at most 12 h after
                # the manifest (lag scaled too); its estimated arrival is the day before
                after = datetime.combine(
                    date.fromisoformat(manifest["arrival_date"]) + timedelta(days=1),
                    datetime.min.time(),
                    UTC,
                ) + timedelta(hours=float(self.filer_rng.uniform(1, 10)))
                entry_t = t + min(after - t, timedelta(hours=12)) * c.entry_lag_scale
            entry = self._entry(
                i, filer.code, hawb, mawb, port, entry_t, shipper, consignee, code, desc,
                manifest["pieces"], entry_value,
            )  # fmt: skip
            bad_reason = None
            if late:
                entry["estimated_arrival"] = (entry_t - timedelta(days=1)).date().isoformat()
            if self.filer_rng.random() < filer.no_eta:
                del entry["estimated_arrival"]
            if c.bad_fraction > 0 and self.filer_rng.random() < filer.invalid:
                entry["lines"][0]["hts"] = entry["lines"][0]["hts"][:3]  # a 3-digit HTS
                bad_reason = "lines"
            out.append(Event("entry", hawb, orjson.dumps(entry), entry_t, bad_reason))
        return out

    def _entry(
        self,
        i: int,
        filer: str,
        hawb: str,
        mawb: str,
        port: str,
        t: datetime,
        shipper: dict,
        consignee: dict,
        code: str,
        desc: str,
        pieces: int,
        value: float,
    ) -> dict:
        rng, c = self.rng, self.c
        serial = f"{i % 10_000_000:07d}"
        suspended = (
            c.suspension_all if shipper["country"] not in ("CN", "HK") else c.suspension_cn_hk
        )
        entry_type = "86" if t.date() < suspended else ("11" if rng.random() < 0.7 else "01")
        n_lines = 1 if rng.random() < 0.85 else int(rng.integers(2, 4))
        shares = rng.dirichlet(np.ones(n_lines)) if n_lines > 1 else np.array([1.0])
        lines = [
            {
                "hts": code + f"{int(rng.integers(0, 100)):02d}00",
                "description": desc,
                "country_of_origin": shipper["country"],
                "quantity": int(max(1, pieces)) if k == 0 else 1,
                "value_usd": round(float(value * sh), 2),
            }
            for k, sh in enumerate(shares)
        ]
        entry: dict[str, Any] = {
            "schema_version": 1,
            "event_time": t.isoformat(),
            "entry_number": filer + serial + str(entry_check_digit(filer, serial)),
            "entry_type": entry_type,
            "filer_code": filer,
            "hawb": hawb,
            "mawb": mawb,
            "port_of_entry": port,
            "estimated_arrival": (t + timedelta(hours=12)).date().isoformat(),
            "shipper": shipper,
            "consignee": consignee,
            "lines": lines,
        }
        if rng.random() < 0.5:
            entry["marketplace"] = _pick(rng, MARKETPLACES)
            entry["seller"] = shipper["name"]
            entry["listing_url"] = (
                f"https://{entry['marketplace'].split()[0].lower()}"
                f".example/item/{int(rng.integers(1_000_000, 1_000_000_000))}"
            )
        if rng.random() < 0.15:  # Section 321 data pilot: where it finally goes
            reship = f"{int(rng.integers(1, 9999))} {_pick(rng, STREETS)} Ave, Unit 9"
            entry["final_deliver_to"] = consignee["address"] if rng.random() < 0.9 else reship
        return entry

    # -- public -----------------------------------------------------------------------

    def parcels(self, count: int) -> Iterator[tuple[list[Event], Label]]:
        """One parcel at a time: its one or two events and its label."""
        self._labels = []
        for i in range(count):
            events, label = self._parcel(i, count)
            if self.keep_labels:
                self._labels.append(label)
            if self.label_sink is not None:
                self.label_sink(label)
            yield events, label

    def events(self, count: int, horizon: timedelta = timedelta(hours=1)) -> Iterator[Event]:
        """Every event of `count` parcels, malformed ones mixed in.

        Entries trail their manifests and wait in a buffer until their time comes. With the
        default `horizon` (the longest an entry may precede its manifest) the output is in
        strict event-time order, as data sets need; a live feed passes 0 so nothing waits
        for future parcels, and an entry filed before its manifest simply arrives late.
        """
        heap: list[tuple[datetime, int, Event]] = []
        seq = 0
        for events, _label in self.parcels(count):
            for ev in events:
                heapq.heappush(heap, (ev.event_time, seq, ev))
                seq += 1
            newest = events[0].event_time
            while heap and heap[0][0] <= newest - horizon:
                yield self._maybe_break(heapq.heappop(heap)[2])
        while heap:
            yield self._maybe_break(heapq.heappop(heap)[2])

    def labels(self) -> list[Label]:
        """The labels of the parcels generated by the last `events`/`parcels` call."""
        if not self.keep_labels:
            raise ValueError("this generator keeps no labels (keep_labels=False)")
        return list(self._labels)

    def _maybe_break(self, ev: Event) -> Event:
        if self.c.bad_fraction <= 0 or self.rng.random() >= self.c.bad_fraction:
            return ev
        raw, reason = corrupt(ev.kind, ev.value, self.rng)
        return Event(ev.kind, ev.key, raw, ev.event_time, reason)


# (manifest field, bad value, entry line field, bad value): wrong type, negative, absurd, short
_FIELD_BREAKS = (
    ("weight_kg", "heavy", "quantity", "ten"),
    ("weight_kg", -2.5, "quantity", -3),
    ("declared_value", 4.2e9, "value_usd", 4.2e9),
    ("hts", "640", "hts", "640"),
)


def corrupt(kind: str, value: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """A malformed version of a record, and the field the validator will name."""
    rec = orjson.loads(value)
    how = int(rng.integers(0, 10))
    line = "lines" if kind == "entry" else None
    if how == 0:
        return value[: len(value) // 2], "record"  # truncated: not JSON
    if how == 1:
        return value.replace(b'"', b'"\xff', 1), "record"  # invalid UTF-8
    if how == 2:
        del rec["hawb"]
        return orjson.dumps(rec), "hawb"
    if how in (3, 4, 5, 6):  # one field broken: on the manifest, or an entry's first line
        field, bad, line_field, line_bad = _FIELD_BREAKS[how - 3]
        if line:
            rec["lines"][0][line_field] = line_bad
            return orjson.dumps(rec), line
        rec[field] = bad
        return orjson.dumps(rec), field
    if how == 7:
        mawb = rec["mawb"]
        rec["mawb"] = mawb[:10] + str((int(mawb[10]) + 1) % 10)
        return orjson.dumps(rec), "mawb"
    if how == 8:
        return b"{}", "schema_version"
    return b"[1, 2, 3]", "record"


def write_labels(labels: Iterable[Label], path: Path) -> int:
    """Ground truth as JSON lines, one parcel a line (kept apart from the records)."""
    n = 0
    with path.open("wb") as f:
        for lab in labels:
            f.write(label_line(lab))
            n += 1
    return n


def label_line(label: Label) -> bytes:
    """One label as a JSON line (what write_labels writes, one at a time)."""
    return orjson.dumps(label.__dict__) + b"\n"

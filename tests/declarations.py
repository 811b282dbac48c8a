"""A generated customs declarations table in a schema the project has never seen.

Fraud comes from a few dishonest importers and sellers and from one office's lax
procedure; half of it is undervalued; "critical" is the fraud that was not. Repeated
(HS6, price, mass) lines from bulk sellers make some test rows copies of training rows,
as in real declarations, so memorisation can be measured.
"""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

import numpy as np

COLUMNS = (
    "sgd_date",
    "sgd_id",
    "office_id",
    "process_type",
    "declarant_id",
    "importer_id",
    "seller_id",
    "express_courier",
    "hs6",
    "departure_country",
    "origin_country",
    "tax_rate",
    "tax_type",
    "item_mass",
    "item_price",
    "fraud",
    "critical_fraud",
)

MAPPING = """\
currency = "KRW"

[columns]
time = "sgd_date"
id = "sgd_id"
value = "item_price"

[labels]
fraud = "fraud"
critical = "critical_fraud"

[features]
numeric = ["tax_rate", "item_mass"]
money = ["item_price"]
categorical = ["office_id", "process_type", "tax_type", "departure_country", "origin_country"]
entities = ["declarant_id", "importer_id", "seller_id", "express_courier"]
hs = "hs6"

[memorisation]
keys = ["hs6", "item_price", "item_mass"]
"""


def declarations(n: int, seed: int = 3) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    hs6 = [f"{c:06d}" for c in rng.choice(np.arange(10_000, 970_000), 120, replace=False)]
    hs_price = dict(zip(hs6, rng.lognormal(10.0, 1.0, len(hs6)), strict=True))  # KRW per kg
    importers = [f"IMP{i:05d}" for i in range(400)]
    bad_importers = set(rng.choice(importers, 30, replace=False))
    sellers = [f"SEL{i:04d}" for i in range(150)]
    bad_sellers = set(rng.choice(sellers, 10, replace=False))
    bulk = [(str(rng.choice(hs6)), float(rng.uniform(0.2, 5))) for _ in range(300)]
    start = date(2020, 1, 1)
    rows = []
    for i in range(n):
        day = start + timedelta(days=int(365 * i / n))
        if rng.random() < 0.25:  # a bulk seller's repeated line
            code, mass = bulk[int(rng.integers(len(bulk)))]
            price = round(hs_price[code] * mass, -2)
        else:
            code = str(rng.choice(hs6))
            mass = round(float(rng.lognormal(0.0, 0.8)), 2)
            price = round(hs_price[code] * mass * float(rng.lognormal(0.0, 0.5)), -2)
        importer = str(rng.choice(importers))
        seller = str(rng.choice(sellers))
        office = f"{int(rng.integers(10, 40))}"
        process = str(rng.choice(["11", "21", "31"]))
        risk = (
            -4.5
            + 3.0 * (importer in bad_importers)
            + 2.5 * (seller in bad_sellers)
            + 1.5 * (office == "17" and process == "31")
        )
        fraud = int(rng.random() < 1.0 / (1.0 + np.exp(-risk)))
        if fraud and rng.random() < 0.5:  # undervalued
            price = round(price * 0.2, -2)
        rows.append(
            {
                "sgd_date": day.isoformat(),
                "sgd_id": f"SGD{i:07d}",
                "office_id": office,
                "process_type": process,
                "declarant_id": f"DEC{int(rng.integers(300)):03d}",
                "importer_id": importer,
                "seller_id": seller,
                "express_courier": str(rng.choice(["CJ", "HANJIN", "LOTTE", "DHL"])),
                "hs6": code,
                "departure_country": str(rng.choice(["CN", "US", "JP", "DE"])),
                "origin_country": str(rng.choice(["CN", "US", "JP", "DE", "VN"])),
                "tax_rate": float(rng.choice([0.0, 8.0, 13.0])),
                "tax_type": str(rng.choice(["A", "C", "FTA"])),
                "item_mass": mass,
                "item_price": price,
                "fraud": fraud,
                "critical_fraud": int(fraud and price > hs_price[code] * mass * 0.5),
            }
        )
    return rows


def write_split(folder: Path, n: int = 12_000, seed: int = 3) -> list[Path]:
    """The table as three CSV files cut by time: train (first 60%), valid, test (20% each)."""
    rows = declarations(n, seed)
    a, b = int(n * 0.6), int(n * 0.8)
    files = []
    for name, part in (("train", rows[:a]), ("valid", rows[a:b]), ("test", rows[b:])):
        path = folder / f"{name}.csv"
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(part)
        files.append(path)
    return files

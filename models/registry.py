"""Model artifacts on disk: save under a version id, verify, load safely.

An artifact is a folder `<model_dir>/<version>/` with `model.skops` (skops, no pickle) and
`meta.json` (feature names, reference statistics, thresholds, metrics, data hash, library
versions, and the model file's SHA-256). Loading checks the checksum and the feature names
first and lets skops build only an allow-listed set of scikit-learn types, so a tampered or
foreign file is refused instead of executed.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import orjson
import skops.io as sio

from models.features import FEATURES, References
from models.model import ParcelRiskModel

MODEL_FILE = "model.skops"
META_FILE = "meta.json"
FORMAT = 1
# the only types skops may build beyond its own defaults
TRUSTED_TYPES = [
    "models.model.ParcelRiskModel",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    # HGB's categorical preprocessing: FunctionTransformer(partial(check_array, ...));
    # skops only builds a partial whose function is itself on this list
    "functools.partial",
    "sklearn.utils.validation.check_array",
]


class ArtifactError(RuntimeError):
    """A model artifact that must not be served: missing, tampered or incompatible."""


@dataclass(frozen=True)
class Artifact:
    version: str
    model: ParcelRiskModel
    references: References
    thresholds: dict[str, dict[str, float]]
    feature_medians: list[float]
    meta: dict[str, Any]


def library_versions() -> dict[str, str]:
    return {p: pkg_version(p) for p in ("scikit-learn", "numpy", "skops")} | {
        "python": platform.python_version()
    }


def save(model_dir: Path, model: ParcelRiskModel, meta: dict[str, Any]) -> str:
    """Write an artifact; its version id is the UTC time plus a content hash."""
    blob = sio.dumps(model)
    digest = hashlib.sha256(blob).hexdigest()
    version = datetime.now(UTC).strftime("m%Y%m%dT%H%M%S") + "-" + digest[:8]
    folder = model_dir / version
    folder.mkdir(parents=True, exist_ok=False)
    (folder / MODEL_FILE).write_bytes(blob)
    full = {
        "features": list(FEATURES),
        **meta,
        "format": FORMAT,
        "version": version,
        "model_sha256": digest,
        "libraries": library_versions(),
        "created_at": datetime.now(UTC).isoformat(),
    }
    (folder / META_FILE).write_bytes(orjson.dumps(full, option=orjson.OPT_INDENT_2))
    return version


def versions(model_dir: Path) -> list[str]:
    """Artifact versions in the folder, oldest first (ids sort by time)."""
    if not model_dir.exists():
        return []
    return sorted(p.name for p in model_dir.iterdir() if (p / META_FILE).exists())


def load(model_dir: Path, version: str | None = None, tables: bool = False) -> Artifact:
    """Verify and load an artifact (the newest when `version` is None). A model of a table
    in its own schema (models/tabular.py) is evaluated, never served: only with `tables`."""
    if not version:
        found = versions(model_dir)
        if not found:
            raise ArtifactError(f"no model artifact in {model_dir}; run `parcel-risk train`")
        version = found[-1]
    folder = model_dir / version
    try:
        meta = orjson.loads((folder / META_FILE).read_bytes())
        blob = (folder / MODEL_FILE).read_bytes()
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ArtifactError(f"model {version}: cannot read artifact ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"model {version}: artifact format {meta.get('format')} unsupported")
    if hashlib.sha256(blob).hexdigest() != meta.get("model_sha256"):
        raise ArtifactError(f"model {version}: checksum mismatch, refusing to load")
    is_table = meta.get("kind") == "table"
    if is_table and not tables:
        raise ArtifactError(
            f"model {version}: trained on a table of its own schema; it scores that table "
            "(parcel-risk evaluate), not parcels"
        )
    if not is_table and meta.get("features") != list(FEATURES):
        raise ArtifactError(f"model {version}: trained on other features than this worker has")
    try:
        untrusted = set(sio.get_untrusted_types(data=blob)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ArtifactError(f"model {version}: untrusted types {sorted(untrusted)}")
        model = sio.loads(blob, trusted=TRUSTED_TYPES)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"model {version}: cannot load ({exc})") from exc
    if not isinstance(model, ParcelRiskModel):
        raise ArtifactError(f"model {version}: not a ParcelRiskModel")
    return Artifact(
        version=version,
        model=model,
        references=References.from_dict(meta["references"]) if not is_table else References(),
        thresholds=meta["thresholds"],
        feature_medians=[float("nan") if m is None else m for m in meta["feature_medians"]],
        meta=meta,
    )


def load_named(name: str, model_dir: Path, tables: bool = False) -> Artifact:
    """An artifact named as a person names one: a version in `model_dir`, or a folder."""
    path = Path(name)
    if path.is_dir():
        return load(path.parent, path.name, tables)
    return load(model_dir, name, tables)

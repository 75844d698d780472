"""The embeddings' blocking check, evaluated inside the asset's own step (`check_specs`), on what the step just
wrote: a check step of its own would cost a launched run another step's events.

Reading every vector costs what the file weighs (200 MB at 100,000 pictures), on every refresh. So a check
that read them all and found them sound records what it read (`embeddings.verified.json`: the vectors'
digest, the file's size and version, the set of images expected); a later check finds the same record and
trusts it, as the collection's check trusts a Lite file unchanged since its verified sync. A changed file,
manifest or model reads everything again, and so does `drop-studio run --verify` (run config
`clip_embeddings: {config: {verify: true}}`), which catches what a record cannot: bytes changed in place
under the same size and modification time."""

from datetime import datetime, timezone

import numpy as np
from dagster import AssetCheckResult, AssetCheckSpec, MetadataValue

from ...domain import listing, storage
from ...domain.artifacts import DropArtifacts, digest
from ...partitions import product_drops
from ..scan.logic import read_manifest
from .logic import embeddings_info, read_embeddings


def sample(items, n: int = 10) -> list:
    """The first few of a set, for a check's metadata."""
    return sorted(items)[:n]


EMBEDDINGS_ARE_SOUND = AssetCheckSpec(
    "embeddings_are_sound", asset="clip_embeddings", blocking=True, partitions_def=product_drops,
    description="Dimension as recorded, unit norm, no NaN, exactly one vector per distinct valid image "
                "(less the files the encoder could not read).",
)


VERIFIED = "embeddings.verified.json"


def embeddings_are_sound(art: DropArtifacts, files: DropArtifacts | None = None,
                         verify: bool = False) -> AssetCheckResult:
    """Hold what the embedding step wrote (in the model's `files`) to the drop's manifest: every vector read
    back, unless the file is the one a previous check read whole and the manifest and model are the same."""
    files = files or art
    info = embeddings_info(files)
    unreadable = {r["sha256"] for r in info.get("rejected", [])}
    expected = set(read_manifest(art).images["sha256"]) - unreadable
    now = {"vectors": info.get("vectors"), "file": listing.version_of(files / "embeddings.parquet"),
           "expected": digest(sorted(expected)), "dim": info.get("dim"), "model": info.get("model_id")}
    last = files.read_json(VERIFIED, {})
    if not verify and now["vectors"] and now["file"] and last.get("read") == now:
        return AssetCheckResult(check_name=EMBEDDINGS_ARE_SOUND.name, passed=True, metadata={
            "dim": info.get("dim"), "expected_dim": info.get("dim"), "model": info.get("model_id") or "",
            "rows": info.get("rows"), "valid_images": len(expected),
            "verified": f"trusted: the file every vector was read from at {last['at']} is unchanged "
                        f"(drop-studio run --verify reads them all)",
        })
    sha, vecs, model_id = read_embeddings(files)
    norms = np.linalg.norm(vecs, axis=1) if len(vecs) else np.zeros(0)
    nan_rows = int(np.isnan(vecs).any(axis=1).sum()) if len(vecs) else 0
    bad_norm = int((np.abs(norms - 1) > 1e-3).sum())
    missing, extra = expected - set(sha), set(sha) - expected
    duplicates = len(sha) - len(set(sha))
    passed = vecs.shape[1] == info.get("dim") and not nan_rows and not bad_norm and not missing and not extra \
        and not duplicates
    if passed:
        files.update_json(VERIFIED, {"read": now, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    else:
        storage.remove(files / VERIFIED)  # a failed read vouches for nothing
    return AssetCheckResult(
        check_name=EMBEDDINGS_ARE_SOUND.name,
        passed=passed,
        metadata={
            "dim": int(vecs.shape[1]), "expected_dim": info.get("dim"), "model": model_id or "",
            "rows": len(sha), "valid_images": len(expected), "nan_rows": nan_rows, "not_unit_norm": bad_norm,
            "duplicates": duplicates, "missing": MetadataValue.json(sample(missing)),
            "extra": MetadataValue.json(sample(extra)), "verified": "every vector read",
        },
    )

"""The embeddings' blocking check, evaluated inside the asset's own step (`check_specs`), on what the step just
wrote: a check step of its own would cost a launched run another step's events."""

import numpy as np
from dagster import AssetCheckResult, AssetCheckSpec, MetadataValue

from ...domain.artifacts import DropArtifacts
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


def embeddings_are_sound(art: DropArtifacts, files: DropArtifacts | None = None) -> AssetCheckResult:
    """Read back what the embedding step wrote (in the model's `files`) and hold it to the drop's manifest."""
    sha, vecs, model_id = read_embeddings(files or art)
    info = embeddings_info(files or art)
    unreadable = {r["sha256"] for r in info.get("rejected", [])}
    expected = set(read_manifest(art).images["sha256"]) - unreadable
    norms = np.linalg.norm(vecs, axis=1) if len(vecs) else np.zeros(0)
    nan_rows = int(np.isnan(vecs).any(axis=1).sum()) if len(vecs) else 0
    bad_norm = int((np.abs(norms - 1) > 1e-3).sum())
    missing, extra = expected - set(sha), set(sha) - expected
    duplicates = len(sha) - len(set(sha))
    passed = vecs.shape[1] == info.get("dim") and not nan_rows and not bad_norm and not missing and not extra \
        and not duplicates
    return AssetCheckResult(
        check_name=EMBEDDINGS_ARE_SOUND.name,
        passed=passed,
        metadata={
            "dim": int(vecs.shape[1]), "expected_dim": info.get("dim"), "model": model_id or "",
            "rows": len(sha), "valid_images": len(expected), "nan_rows": nan_rows, "not_unit_norm": bad_norm,
            "duplicates": duplicates, "missing": MetadataValue.json(sample(missing)),
            "extra": MetadataValue.json(sample(extra)),
        },
    )

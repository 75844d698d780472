"""product_duplicates: the drop's pictures that are the same shot, and those near-identical to CLIP."""

from dagster import AssetExecutionContext, MetadataValue

from ...metadata import table
from ...resources import DropLibrary, MilvusResource, search_models
from ...stage import Outcome, drop_stage
from ..embeddings.asset import clip_embeddings
from ..embeddings.logic import read_embeddings
from ..scan.logic import read_manifest
from .logic import find_duplicates

GROUP_COLUMNS = {"group": "int", "path": "string"}


def _rows(groups: list[list[str]]) -> list[dict]:
    return [{"group": n, "path": p} for n, g in enumerate(groups, 1) for p in g]


@drop_stage(
    deps=[clip_embeddings],
    group_name="catalog",
    kinds={"python"},
    description="Groups of the drop's pictures that are the same shot (a perceptual hash of the picture and of "
                "its 90% crops: copies, re-encodes, resizes, small crops), and, apart, pictures whose CLIP vectors "
                "are near-identical. Nothing is deleted; search shows one picture of a same-shot group.",
)
def product_duplicates(context: AssetExecutionContext, drop: str, library: DropLibrary, milvus: MilvusResource) -> Outcome:
    art = library.artifacts(drop)
    serving = search_models(library, milvus).serving
    files = serving.files(art) if serving else art
    manifest = read_manifest(art)
    images = list(zip(manifest.images["path"], manifest.images["sha256"])) if manifest is not None else []

    def vectors() -> dict:
        sha, vecs, _ = read_embeddings(files)
        return dict(zip(sha, vecs))

    report = find_duplicates(library.drop(drop).folder, files, images, vectors, serving.id if serving else None)
    if report.changed:
        context.log.info(f"{drop}: {len(report.same_shot)} same-shot groups, {len(report.near_identical)} "
                         f"near-identical groups ({report.hashed} pictures hashed)")
    return Outcome(report.key, {
        "same_shot_groups": len(report.same_shot),
        "pictures_in_same_shot_groups": sum(len(g) for g in report.same_shot),
        "near_identical_groups": len(report.near_identical),
        "same_shot": table(_rows(report.same_shot), GROUP_COLUMNS),
        "near_identical": table(_rows(report.near_identical), GROUP_COLUMNS),
        "blank": MetadataValue.json(report.blank),
        "hashed": report.hashed,
    })


ASSETS = [product_duplicates]

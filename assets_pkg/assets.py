"""The lineage graph, one partition per product drop:

raw_product_images -> clip_embeddings -> product_image_collection -> reference_images -> campaign_images
                                             campaign_briefs ------^
"""

import functools
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from .checks import (
    COLLECTION_MATCHES_MANIFEST,
    EMBEDDINGS_ARE_SOUND,
    EVERY_BRIEF_HAS_REFERENCES,
    collection_matches_manifest,
    collection_unchanged_since_verified,
    embeddings_are_sound,
    every_brief_has_references,
)
from .domain.artifacts import write_atomic
from .domain.briefs import load_briefs
from .domain.errors import StudioError
from .domain.campaigns import CampaignOutputs, CampaignReport, check_budget, generate_interactive, run_batch
from .domain.sheets import contact_sheet, markdown_image, to_jpeg
from .domain.store import lite_fingerprint, row_id
from .partitions import product_drops
from .resources import ClipModel, DropLibrary, ImageGeneratorResource, MilvusResource



# The embedding step's pod under dagster-k8s: one NVIDIA GPU, on a node that has one.
GPU_POD = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "4", "memory": "16Gi"}}},
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
SHEET_LIMIT = 48  # thumbnails per contact sheet shown in the UI


def _md_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _save_sheet(library: DropLibrary, drop: str, name: str, sheet) -> dict:
    path = library.artifacts(drop).sheet_path(name)
    write_atomic(path, to_jpeg(sheet, max_side=2400, quality=85))
    return {"contact_sheet": MetadataValue.md(markdown_image(sheet, name)), "contact_sheet_file": MetadataValue.path(str(path))}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _existing_sheet(library: DropLibrary, drop: str, name: str) -> dict:
    """The metadata of a contact sheet an earlier run wrote, when its inputs are unchanged."""
    path = library.artifacts(drop).sheet_path(name)
    with Image.open(path) as sheet:
        inline = markdown_image(sheet, name)
    return {"contact_sheet": MetadataValue.md(inline),
            "contact_sheet_file": MetadataValue.path(str(path))}


def _fail_clearly(fn):
    """Turn a StudioError into a Dagster Failure whose description is the one-line message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StudioError as e:
            raise Failure(description=str(e)) from e

    return wrapper


@asset(
    partitions_def=product_drops,
    group_name="catalog",
    kinds={"python", "parquet"},
    description="Manifest of a drop folder: one row per valid image (path, sha256, size, format); rejected files with reasons.",
)
@_fail_clearly
def raw_product_images(context: AssetExecutionContext, library: DropLibrary) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    previous = art.read_manifest()
    from .domain.drops import scan_drop

    start = time.perf_counter()
    manifest = scan_drop(drop, previous.images if previous else None, max_pixels=library.max_image_pixels)
    unchanged = previous is not None and previous.rejected == manifest.rejected \
        and previous.images.equals(manifest.images)
    if not unchanged:
        art.write_manifest(manifest)
    images = manifest.images
    for r in manifest.rejected:
        context.log.warning(f"rejected {drop.name}/{r['file']}: {r['reason']}")
    if unchanged and art.sheet_path("drop").exists():
        sheet_meta = _existing_sheet(library, drop.name, "drop")
    else:
        sheet = contact_sheet(
            [(drop.folder / p, p) for p in images["path"].head(SHEET_LIMIT)],
            title=f"{drop.name}: {len(images)} images" + (f" (first {SHEET_LIMIT})" if len(images) > SHEET_LIMIT else ""),
        )
        sheet_meta = _save_sheet(library, drop.name, "drop", sheet)
    return MaterializeResult(
        metadata={
            "images": len(images) + len(manifest.rejected),
            "valid": len(images),
            "rejected": len(manifest.rejected),
            "distinct_contents": int(images["sha256"].nunique()),
            "bytes": int(images["bytes"].sum()),
            "formats": MetadataValue.json(dict(Counter(images["format"]))),
            "rejected_files": MetadataValue.md(_md_table(manifest.rejected, ["file", "reason"]))
            if manifest.rejected
            else MetadataValue.text("none"),
            "scan_seconds": round(time.perf_counter() - start, 3),
            "dagster/row_count": len(images),
            "folder": MetadataValue.path(str(drop.folder)),
            "changed": not unchanged,
            **sheet_meta,
        }
    )


@asset(
    partitions_def=product_drops,
    deps=[raw_product_images],
    group_name="catalog",
    kinds={"pytorch", "parquet"},
    pool="gpu",
    check_specs=[EMBEDDINGS_ARE_SOUND],
    # On Kubernetes (deploy/helm, k8s_job_executor) this step's pod lands on a GPU node; elsewhere it is inert.
    op_tags={"dagster-k8s/config": GPU_POD},
    description="CLIP image embeddings (float32, unit norm) of each distinct image; reused by content hash.",
)
@_fail_clearly
def clip_embeddings(context: AssetExecutionContext, library: DropLibrary, clip: ClipModel) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    manifest = art.read_manifest()
    unique = manifest.unique_images
    model_id = clip.model_id()  # without loading the weights: an unchanged drop never imports torch

    old_sha, old_vecs, old_model = art.read_embeddings()
    known = dict(zip(old_sha, old_vecs)) if old_model == model_id else {}
    resumed = art.read_partial_batches(model_id)  # batches a killed run finished
    known.update(resumed)
    todo = unique[~unique["sha256"].isin(known.keys())].reset_index(drop=True)
    vectors: dict[str, np.ndarray] = {h: known[h] for h in unique["sha256"] if h in known}
    dim = old_vecs.shape[1] if old_model == model_id and old_vecs.shape[1] else None
    # The model is loaded only when something needs encoding (or an empty first run needs its dimension).
    encoder = clip.encoder() if len(todo) or dim is None else None

    if resumed:
        context.log.info(f"{drop.name}: resuming, {len(resumed)} vectors from an interrupted run")
    context.log.info(
        f"{drop.name}: {len(unique)} distinct images, {len(vectors)} reused, {len(todo)} to encode"
        + (f" with {model_id} on {encoder.device} (batch {encoder.batch_size})" if len(todo) else "")
    )
    failures: list[dict] = []
    start = time.perf_counter()
    paths = [drop.folder / p for p in todo["path"]]

    bar = tqdm(total=len(paths), desc=f"{drop.name} embeddings", unit="img", file=sys.stderr,
               disable=not (clip.progress_bar and paths))

    def progress(p):
        context.log.info(f"embedded {p.done}/{p.total} images, {p.images_per_second:.1f} images/s")
        bar.update(p.done - bar.n)

    with bar:
        for batch in (encoder.iter_image_batches(paths, on_progress=progress) if paths else []):
            done_sha = [todo.at[i, "sha256"] for i in batch.indices]
            art.write_partial_batch(done_sha, batch.vectors, model_id)
            vectors.update(zip(done_sha, batch.vectors))
            for i, reason in batch.failures:
                failures.append({"file": todo.at[i, "path"], "reason": reason})
                context.log.warning(f"rejected {drop.name}/{todo.at[i, 'path']}: {reason}")
    seconds = time.perf_counter() - start

    order = [h for h in unique["sha256"] if h in vectors]
    matrix = np.stack([vectors[h] for h in order]) if order else np.zeros((0, dim or encoder.dim), np.float32)
    if len(todo) or resumed or order != list(old_sha) or old_model != model_id:
        art.write_embeddings(order, matrix, model_id)
    art.clear_partial_batches()
    if failures:  # decodable by PIL at scan time but not by the encoder's reader
        manifest.rejected = sorted(manifest.rejected + failures, key=lambda r: r["file"])
        bad = {f["file"] for f in failures}
        manifest.images = manifest.images[~manifest.images["path"].isin(bad)].reset_index(drop=True)
        art.write_manifest(manifest)
    encoded = len(todo) - len(failures)
    return MaterializeResult(
        check_results=[embeddings_are_sound(art)],
        metadata={
            "model": model_id,
            "device": encoder.device if encoder else "none (nothing to encode)",
            "dim": int(matrix.shape[1]),
            "vectors": len(order),
            "encoded": encoded,
            "reused": len(unique) - len(todo),
            "rejected": len(failures),
            "encode_seconds": round(seconds, 3),
            "images_per_second": round(encoded / seconds, 1) if encoded and seconds > 0 else 0.0,
            "batch_size": encoder.batch_size if encoder else 0,
            "fit": clip.fit,
            "dagster/row_count": len(order),
        }
    )


@asset(
    partitions_def=product_drops,
    deps=[clip_embeddings],
    group_name="catalog",
    kinds={"milvus"},
    check_specs=[COLLECTION_MATCHES_MANIFEST],
    description="The drop's rows in the Milvus collection: exactly its valid images, keyed by drop and content hash.",
)
@_fail_clearly
def product_image_collection(
    context: AssetExecutionContext, library: DropLibrary, milvus: MilvusResource
) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    unique = art.read_manifest().unique_images
    sha, vecs, model_id = art.read_embeddings()
    vec_of = dict(zip(sha, vecs))
    rows = [
        {**r, "vector": vec_of[r["sha256"]]}
        for r in unique.to_dict("records")
        if r["sha256"] in vec_of
    ]
    wanted = {row_id(drop.name, r["sha256"]) for r in rows}
    # What searches of this drop can find: changes exactly when a row, a path or the weights change.
    digest = _digest({"model": model_id, "collection": milvus.collection, "milvus": milvus.display_uri,
                      "rows": sorted((row_id(drop.name, r["sha256"]), r["path"], *r["aliases"]) for r in rows)})
    last = art.read_sync()
    fingerprint = lite_fingerprint(milvus.uri)
    if fingerprint and last.get("rows_digest") == digest and last.get("verified_fingerprint") == fingerprint:
        # The same rows were synced and verified, and the Milvus Lite file is byte for byte as that run
        # left it: the collection cannot have changed, so there is nothing to open it for.
        upserted = deleted = 0
        changed: list = []
        indexed, total = last["indexed"], last["collection_rows"]
        check = collection_unchanged_since_verified(len(unique), indexed)
    else:
        with milvus.store() as store:
            store.ensure_collection(vecs.shape[1])
            current = store.rows_of_drop(drop.name)
            same_model = art.synced_model() == model_id
            changed = [
                r for r in rows
                if not same_model
                or current.get(row_id(drop.name, r["sha256"])) != (r["path"], tuple(r["aliases"]))
            ]
            upserted = store.upsert_drop(drop.name, changed)
            stale = sorted(set(current) - wanted)
            deleted = store.delete_ids(drop.name, stale)
            if upserted or deleted:
                store.flush()
            ids = store.ids_of_drop(drop.name)
            indexed = len(ids)
            total = store.count()
            # Checked here, on the connection the sync used: a separate check step would open Milvus again.
            check = collection_matches_manifest(drop.name, unique["sha256"], ids)
        fingerprint = store.fingerprint_at_close if check.passed else None
    art.mark_synced(model_id, milvus.collection, milvus.display_uri, digest, indexed=indexed,
                    collection_rows=total, verified_fingerprint=fingerprint)
    context.log.info(f"{drop.name}: upserted {upserted}, deleted {deleted}, {indexed} rows now in {milvus.collection}")
    return MaterializeResult(
        # reference_images follows a changed data version, not every (often no-op) refresh
        data_version=DataVersion(digest),
        check_results=[check],
        metadata={
            "collection": milvus.collection,
            "milvus": milvus.display_uri,
            "indexed": indexed,
            "upserted": upserted,
            "deleted": deleted,
            "unchanged": len(rows) - len(changed),
            "collection_rows": total,
            "dagster/row_count": indexed,
        }
    )


@asset(
    partitions_def=product_drops,
    group_name="campaigns",
    kinds={"yaml"},
    description="Validated campaign briefs from <drop>/briefs.yaml (id, prompt, query, top_k, aspect_ratio).",
)
@_fail_clearly
def campaign_briefs(
    context: AssetExecutionContext, library: DropLibrary, generator: ImageGeneratorResource
) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    # Sizes and aspect ratios are checked against the configured model, so a brief it cannot serve
    # fails here, naming the file and the brief, before anything is searched or billed.
    briefs = load_briefs(drop.briefs_file, model=generator.model_info(), default_size=generator.image_size)
    library.artifacts(drop.name).write_briefs(briefs)
    if not drop.briefs_file.exists():
        context.log.info(f"{drop.briefs_file} not found: no campaign briefs for {drop.name}")
    return MaterializeResult(
        data_version=DataVersion(_digest([b.to_dict() for b in briefs])),
        metadata={
            "briefs": len(briefs),
            "file": MetadataValue.path(str(drop.briefs_file)),
            "table": MetadataValue.md(_md_table([b.to_dict() for b in briefs], ["id", "query", "top_k", "aspect_ratio",
                                                                              "image_size", "variants", "prompt"]))
            if briefs
            else MetadataValue.text("no briefs"),
        }
    )


# reference_images follows its inputs: a run of any kind (the nightly refresh, a click on an upstream
# asset in the UI) that changes the drop's Milvus rows or its briefs is followed by a search for that drop.
# It keys on data versions, so a refresh that changed nothing launches nothing; and a run that already
# searched (the drop sensor's, the weekly one) is not followed by a second search.
INPUTS_CHANGED = AutomationCondition.any_deps_match(
    AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target()
).with_label("rows_or_briefs_changed")
FOLLOWS_ITS_INPUTS = AutomationCondition.eager().replace("any_deps_updated", INPUTS_CHANGED)


@asset(
    partitions_def=product_drops,
    deps=[product_image_collection, campaign_briefs],
    group_name="campaigns",
    kinds={"milvus", "pytorch"},
    automation_condition=FOLLOWS_ITS_INPUTS,
    check_specs=[EVERY_BRIEF_HAS_REFERENCES],
    description="For each brief, the drop's best-matching images for its query (CLIP text-to-image search in Milvus).",
)
@_fail_clearly
def reference_images(
    context: AssetExecutionContext, library: DropLibrary, clip: ClipModel, milvus: MilvusResource
) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    briefs = art.read_briefs()
    # Same briefs, same weights, same rows: the search would return the same references.
    # (Only what the search depends on: collection.json also holds counts and the Lite file's fingerprint,
    # which change whenever any drop is written.)
    sync = art.read_sync()
    inputs_key = _digest({"briefs": [b.to_dict() for b in briefs],
                          "rows": {k: sync.get(k) for k in ("model_id", "collection", "milvus", "rows_digest")}})
    reused = art.references_inputs_key() == inputs_key
    if reused:
        refs = art.read_references()
        context.log.info(f"{drop.name}: briefs and Milvus rows unchanged since the last search; references kept")
    else:
        refs = {}
        if briefs:
            queries = clip.encoder().embed_texts([b.query for b in briefs])
            with milvus.store() as store:
                results = store.search(queries, drop=drop.name, top_k=max(b.top_k for b in briefs))
            for b, hits in zip(briefs, results):
                refs[b.id] = [{"path": h.path, "score": round(h.score, 4), "sha256": h.sha256} for h in hits[: b.top_k]]
        art.write_references(refs, inputs_key)
    empty = [b.id for b in briefs if not refs.get(b.id)]  # also the check's finding
    for b in briefs:
        context.log.info(f"{b.id} ({b.query!r}): " + ", ".join(f"{r['path']} {r['score']:.3f}" for r in refs[b.id]))
    if reused and art.sheet_path("references").exists():
        sheet_meta = _existing_sheet(library, drop.name, "references")
    else:
        items = [
            (drop.folder / r["path"], f"{b.id} #{k + 1} {r['score']:.2f}")
            for b in briefs
            for k, r in enumerate(refs[b.id])
        ]
        cols = max([b.top_k for b in briefs] or [1])
        sheet = contact_sheet(items[:SHEET_LIMIT], cols=min(cols, 8), title=f"{drop.name}: references per brief")
        sheet_meta = _save_sheet(library, drop.name, "references", sheet)
    return MaterializeResult(
        check_results=[every_brief_has_references(briefs, refs)],
        metadata={
            "briefs": len(briefs),
            "references": sum(len(v) for v in refs.values()),
            "searched": not reused,
            "briefs_without_references": MetadataValue.json(empty),
            "table": MetadataValue.md(
                _md_table(
                    [{"brief": b.id, "query": b.query, "rank": k + 1, "path": r["path"], "score": r["score"]}
                     for b in briefs for k, r in enumerate(refs[b.id])],
                    ["brief", "query", "rank", "path", "score"],
                )
            ) if briefs else MetadataValue.text("no briefs"),
            **sheet_meta,
        }
    )


class CampaignConfig(Config):
    force: bool = False  # regenerate even when prompt, model, settings and references are unchanged


@asset(
    partitions_def=product_drops,
    deps=[reference_images, campaign_briefs],
    group_name="campaigns",
    kinds={"gemini", "png"},
    description="Campaign images per brief (1-4 variants), generated from the prompt and its reference images; "
                "PNG + JSON sidecar. GEMINI_MODE=batch submits a Batch API job and collects it in a later run.",
)
@_fail_clearly
def campaign_images(
    context: AssetExecutionContext, config: CampaignConfig, library: DropLibrary, generator: ImageGeneratorResource
) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    briefs = art.read_briefs()
    refs = art.read_references()
    gen = generator.generator()  # a shut-down model fails here, before any request
    mode = generator.run_mode()
    info = generator.model_info()
    price = (lambda size: info.price(size, mode)) if generator.enabled else (lambda size: 0.0)
    outputs = CampaignOutputs(art.campaign_dir)
    report = CampaignReport()
    log = context.log.info
    todo = outputs.plan(briefs, refs, gen.name, gen.model, config.force, report, log)
    cap = generator.cost_cap()
    if mode == "batch":
        batch = run_batch(gen, outputs, art.campaign_batch_path, drop.name, drop.folder, todo, price, cap, report, log)
    else:
        check_budget(todo, price, cap, gen.model, mode)  # over the cap: nothing is requested
        generate_interactive(gen, outputs, drop.name, drop.folder, todo, price, generator.concurrency, report,
                             context.log.warning)
        batch = None
    removed = outputs.remove_stale(briefs)
    report.generated.sort()
    if briefs and not report.generated and not report.pending:
        raise Failure(description=f"{drop.name}: no brief produced an image: " + ", ".join(
            f"{b['brief']} ({b['reason']})" for b in report.blocked))
    sheet = contact_sheet([(Path(p), Path(p).stem) for p in report.generated], thumb=256, cols=4,
                          title=f"{drop.name}: campaign images by {gen.name}")
    return MaterializeResult(
        metadata={
            "generator": gen.name,
            "model": gen.model or "offline campaign board (no GEMINI_API_KEY)",
            "mode": mode,
            "briefs": len(briefs),
            "generated": len(report.generated),
            "cached": report.cached,
            "blocked": MetadataValue.json(report.blocked),
            "requests": report.requests,
            "pending": report.pending,
            "batch_job": batch or "",
            "usage": MetadataValue.json(report.usage),
            "estimated_cost_usd": report.estimated_cost_usd,
            "estimated_cost_per_brief": MetadataValue.json(report.per_brief_cost_usd),
            "removed_stale": MetadataValue.json(removed),
            "output_dir": MetadataValue.path(str(outputs.folder)),
            **_save_sheet(library, drop.name, "campaign", sheet),
        }
    )


drop_assets = [
    raw_product_images,
    clip_embeddings,
    product_image_collection,
    campaign_briefs,
    reference_images,
    campaign_images,
]

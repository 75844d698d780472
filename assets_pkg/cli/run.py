"""`drop-studio run`: the whole graph for drops, in process, in batches as the daemon makes them, recorded in the
Dagster instance (so `dagster dev` shows the runs)."""

from __future__ import annotations

import json
import os
import socket
import sys

import click

from ..instance import open_instance, reap_dead_runs, sync_drops
from ..run_results import asset_metadata, check_results, failure
from .app import CliError, cli, quiet, still_on_serving


def summarize(drop: str, result, artifacts_dir: str, files=None) -> dict:
    """`files`: the files of the model the run encoded with (domain/search_models.py)."""
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.stages.briefs.logic import read_briefs
    from assets_pkg.stages.campaigns.logic import campaign_pngs
    from assets_pkg.stages.catalog.logic import read_catalog_of
    from assets_pkg.stages.embeddings.logic import rejected_files

    art = DropArtifacts.at(artifacts_dir, drop)
    from assets_pkg import assets

    raw, cat, emb, col, camp = (asset_metadata(result, a.key.path[-1], drop) for a in (
        assets.raw_product_images, assets.product_catalog, assets.clip_embeddings, assets.product_image_collection,
        assets.campaign_images))
    blocked = camp.get("blocked") or []
    return {
        "drop": drop,
        "ok": result.success,
        "images": raw.get("images"),
        "distinct": raw.get("distinct_contents"),
        "encoded": emb.get("encoded"),
        "reused": emb.get("reused"),
        "rejected": rejected_files(art, files(art) if files else None),
        "products": cat.get("products"),
        "catalog_rejected": read_catalog_of(art).rejected if cat else [],
        "indexed": col.get("indexed"),
        "upserted": col.get("upserted"),
        "deleted": col.get("deleted"),
        "briefs": len(read_briefs(art)),
        "generated": sorted(str(p) for p in campaign_pngs(art)) if camp else [],
        "blocked": [b["brief"] for b in blocked],
        "checks": check_results(result, drop),
        "error": failure(result, drop),
    }


def run_in_batches(run_one, drops: list[str], order: list[str], size: int) -> dict:
    """drop -> the run that settled it. `drops` go out in runs of at most `size` neighbours in `order`; a failed
    run of several is split as the batch_split sensor splits one (the drops that failed alone, the others
    together again) until every drop succeeded, or failed in a run of its own."""
    from assets_pkg.partitions import batches, split
    from assets_pkg.stage import failed_drops

    settled = {}
    todo = batches(order, drops, size)
    while todo:
        part = todo.pop(0)
        result = run_one(part)
        if result.success or len(part) == 1:
            settled.update({d: result for d in part})
            continue
        failures = [e for e in result.all_events if e.is_step_failure]
        todo = split(part, failed_drops(failures, part), size) + todo
    return settled


@cli.command()
@click.option("--drop", "drops_wanted", multiple=True, metavar="DROP", help="a drop to run (repeatable; default: all)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per drop")
@click.option("--search-again", is_flag=True,
              help="search every brief's references again, although its inputs are unchanged")
@click.option("--log-level", default="CRITICAL", show_default=True,
              help="Dagster console log level; INFO shows per-batch progress")
def run(drops_wanted: tuple[str, ...], as_json: bool, search_again: bool, log_level: str) -> None:
    """Materialize the whole graph for drops (default: all)."""
    from dagster import materialize

    from assets_pkg.assets import drop_assets, drop_checks, reference_images, search_model
    from assets_pkg.domain.artifacts import check_artifacts_dir
    from assets_pkg.domain.settings import setting
    from assets_pkg.resources import ClipModel, DropLibrary, MilvusResource, build_resources, search_models

    resources = build_resources(progress_bar=sys.stderr.isatty() and not as_json)
    instance = open_instance()
    drops_dir = setting("DROPS_DIR")
    artifacts_dir = setting("ARTIFACTS_DIR")
    check_artifacts_dir(artifacts_dir)  # before any run starts
    note = MilvusResource().search_note()
    if note:
        print(f"drop-studio: {note}", file=sys.stderr)
    names, _, invalid = sync_drops(instance, drops_dir)
    for bad in invalid:
        print(f"skipped folder {bad!r}: not a valid drop name", file=sys.stderr)
    for run_id in reap_dead_runs(instance):
        print(f"marked run {run_id} failed: its drop-studio process is gone", file=sys.stderr)
    wanted = list(drops_wanted) or names
    unknown = [d for d in wanted if d not in names]
    if unknown:
        raise CliError(f"no such drop in {drops_dir}: {', '.join(unknown)} (known: {', '.join(names) or 'none'})")
    from assets_pkg.partitions import RANGE_END_TAG, RANGE_START_TAG

    order = list(instance.get_dynamic_partitions("product_drops"))

    def run_one(part: list[str], selection=None):
        if not as_json:
            print(f"== {', '.join(part)}", file=sys.stderr)
        one = {"partition_key": part[0]} if len(part) == 1 else {}
        span = {} if one else {RANGE_START_TAG: part[0], RANGE_END_TAG: part[-1]}
        return materialize(
            [*drop_assets, *drop_checks],
            selection=selection,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags={"drop": part[0] if one else f"{part[0]}..{part[-1]}", "drops": str(len(part)),
                  "launched_by": "drop-studio", "drop_studio/pid": str(os.getpid()),
                  "drop_studio/host": socket.gethostname(), **span},
            run_config={**quiet(log_level),
                        **({"ops": {"reference_images": {"config": {"search_again": True}}}}
                           if search_again else {})},
            **one,
        )

    settled = run_in_batches(run_one, wanted, order, setting("DROP_BATCH"))
    models = search_models(DropLibrary(), MilvusResource())
    if models.target is not None and all(r.success for r in settled.values()) and setting("MODEL_SWITCH") == "auto":
        # A change of CLIP_MODEL: search moves to it once every drop is built, and briefs search with it.
        switch = materialize([search_model], instance=instance, resources=resources, raise_on_error=False,
                             tags={"launched_by": "drop-studio"}, run_config=quiet(log_level))
        models = search_models(DropLibrary(), MilvusResource())
        if switch.success and models.target is None:
            print(f"search now answers from {models.serving.id}; searching every brief's references with it",
                  file=sys.stderr)
            run_in_batches(lambda part: run_one(part, selection=[reference_images]), order, order,
                           setting("DROP_BATCH"))
        elif models.target is not None:
            print(still_on_serving(models), file=sys.stderr)
    model = models.find(ClipModel().model_id())
    files = model.files if model else None
    summaries = []
    for drop in wanted:
        s = summarize(drop, settled[drop], artifacts_dir, files)
        summaries.append(s)
        if not as_json:
            if s["ok"]:
                print(
                    f"{drop}: {s['images']} images ({s['distinct']} distinct), {s['encoded']} encoded, {s['reused']} reused, "
                    f"{len(s['rejected'])} rejected, {s['indexed']} indexed, {s['deleted']} deleted, "
                    f"{len(s['generated'])}/{s['briefs']} campaign images"
                    + (f", blocked: {', '.join(s['blocked'])}" if s["blocked"] else "")
                )
                for p in s["generated"]:
                    print(f"  {p}")
            else:
                print(f"{drop}: FAILED {s['error']}", file=sys.stderr)
    if as_json:
        print(json.dumps(summaries, indent=2))
    failed = [s for s in summaries if not s["ok"]]
    if failed and as_json:
        for s in failed:
            print(f"drop-studio: {s['drop']}: {s['error']}", file=sys.stderr)
    if failed:
        sys.exit(1)

"""`drop-studio run`: the whole graph for drops, in process, in batches as the daemon makes them, recorded in the
Dagster instance (so `dagster dev` shows the runs)."""

from __future__ import annotations

import json
import sys

import click

from ..domain.plan import after_failure, batches, model_step
from ..instance import open_instance, reap_dead_runs, run_drops, sync_drops
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


def run_all(run_one, runs: list[list[str]], size: int) -> dict:
    """drop -> the run that settled it. Each of `runs` goes out; a failed run of several is followed by the
    runs domain/plan.after_failure names (as the batch_split sensor's are), until every drop succeeded or
    failed in a run of its own."""
    from assets_pkg.stage import failed_drops

    settled = {}
    todo = list(runs)
    while todo:
        part = todo.pop(0)
        result = run_one(part)
        again = [] if result.success else after_failure(
            part, failed_drops([e for e in result.all_events if e.is_step_failure], part), size)
        if not again:
            settled.update({d: result for d in part})
        todo = again + todo
    return settled


def follow_model(models_now, switch, search_again, drops: list[str], size: int, manual: bool) -> "object":
    """After this run's drops were built: the steps of a change of model that domain/plan.model_step names, as
    the model_changes sensor makes them (this run built the drops itself, and searches again only after a
    switch it made). `switch()` runs the search_model asset, `search_again(runs)` the references."""
    models = models_now()
    facts = models.facts(drops, manual)
    step = model_step(facts, drops, size, {"rebuilt": facts.transition, "searched": facts.switched})
    if step.action == "switch" and switch():
        models = models_now()
        step = model_step(models.facts(drops, manual), drops, size, step.done)
        if step.action == "search_again":
            print(f"search now answers from {models.serving.id}; searching every brief's references with it",
                  file=sys.stderr)
            search_again(step.runs)
    if models.target is not None:
        print(still_on_serving(models), file=sys.stderr)
    return models


@cli.command()
@click.option("--drop", "drops_wanted", multiple=True, metavar="DROP", help="a drop to run (repeatable; default: all)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object per drop")
@click.option("--search-again", is_flag=True,
              help="search every brief's references again, although its inputs are unchanged")
@click.option("--verify", is_flag=True,
              help="read every vector and ask Milvus for every row, although the last run verified them")
@click.option("--log-level", default="CRITICAL", show_default=True,
              help="Dagster console log level; INFO shows per-batch progress")
def run(drops_wanted: tuple[str, ...], as_json: bool, search_again: bool, verify: bool, log_level: str) -> None:
    """Materialize the whole graph for drops (default: all)."""
    from dagster import materialize

    from assets_pkg.assets import reference_images, search_model
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
    order = list(instance.get_dynamic_partitions("product_drops"))
    ops = {**({"reference_images": {"config": {"search_again": True}}} if search_again else {}),
           **({op: {"config": {"verify": True}} for op in ("clip_embeddings", "product_image_collection")}
              if verify else {})}
    run_config = {**quiet(log_level), **({"ops": ops} if ops else {})}

    def run_one(part: list[str], selection=None):
        if not as_json:
            print(f"== {', '.join(part)}", file=sys.stderr)
        config = run_config
        if selection is not None:  # config only for the ops of the run: Dagster refuses any other
            names = {a.key.path[-1] for a in selection}
            config = {**run_config, "ops": {k: v for k, v in ops.items() if k in names}}
        return run_drops(part, resources, instance, selection=selection, run_config=config)

    size = setting("DROP_BATCH")
    settled = run_all(run_one, batches(order, wanted, size), size)

    def switch() -> bool:
        return all(r.success for r in settled.values()) and materialize(
            [search_model], instance=instance, resources=resources, raise_on_error=False,
            tags={"launched_by": "drop-studio"}, run_config=quiet(log_level)).success

    models = follow_model(lambda: search_models(DropLibrary(), MilvusResource()), switch,
                          lambda runs: run_all(lambda part: run_one(part, selection=[reference_images]), runs, size),
                          order, size, manual=setting("MODEL_SWITCH") == "manual")
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

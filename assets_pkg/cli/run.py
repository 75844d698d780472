"""`drop-studio run`: the whole graph for drops, in process, in batches as the daemon makes them, recorded in the
Dagster instance (so `dagster dev` shows the runs)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import click

from ..domain.plan import after_failure, batches, model_step
from ..instance import open_instance, reap_dead_runs, run_drops, sync_drops
from ..run_results import asset_metadata, check_results, failed_error_checks, failure
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
        "pending": camp.get("pending") or 0,
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
        "failed_checks": failed_error_checks(result, drop),
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
    from assets_pkg.domain.artifacts import check_artifacts_dir
    from assets_pkg.domain.settings import setting

    drops_dir = setting("DROPS_DIR")
    artifacts_dir = setting("ARTIFACTS_DIR")
    check_artifacts_dir(artifacts_dir)  # before any run starts
    # Drops a run left with nothing to do, and still so: answered without Dagster (domain/settled.py).
    names = list(drops_wanted) or _drop_names(drops_dir)
    quiet_drops = {} if (search_again or verify) else settled_drops(names, drops_dir, artifacts_dir)
    if names and all(d in quiet_drops for d in names):
        report([quiet_drops[d] for d in names], as_json)
        return

    from dagster import materialize

    from assets_pkg.assets import reference_images, search_model
    from assets_pkg.resources import ClipModel, DropLibrary, MilvusResource, build_resources, search_models

    resources = build_resources(progress_bar=sys.stderr.isatty() and not as_json)
    instance = open_instance()
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
            selected = {a.key.path[-1] for a in selection}
            config = {**run_config, "ops": {k: v for k, v in ops.items() if k in selected}}
        return run_drops(part, resources, instance, selection=selection, run_config=config)

    size = setting("DROP_BATCH")
    to_run = [d for d in wanted if d not in quiet_drops]
    settled = run_all(run_one, batches(order, to_run, size), size) if to_run else {}

    def switch() -> bool:
        return all(r.success for r in settled.values()) and materialize(
            [search_model], instance=instance, resources=resources, raise_on_error=False,
            tags={"launched_by": "drop-studio"}, run_config=quiet(log_level)).success

    models = follow_model(lambda: search_models(DropLibrary(), MilvusResource()), switch,
                          lambda runs: run_all(lambda part: run_one(part, selection=[reference_images]), runs, size),
                          order, size, manual=setting("MODEL_SWITCH") == "manual")
    model = models.find(ClipModel().model_id())
    files = model.files if model else None
    summaries = [quiet_drops[d] if d in quiet_drops else summarize(d, settled[d], artifacts_dir, files) for d in wanted]
    remember_settled([s for s in summaries if not s.get("settled_by")], drops_dir, artifacts_dir,
                     switching=models.target is not None)
    report(summaries, as_json)


def _drop_names(drops_dir: str) -> list[str]:
    from assets_pkg.domain.drops import discover_drops

    return [d.name for d in discover_drops(drops_dir).drops]


def settled_drops(names: list[str], drops_dir: str, artifacts_dir: str) -> dict[str, dict]:
    """drop -> what a run would say of it now, for the drops of `names` whose settled key is unchanged since a
    run settled them: that run's summary, with nothing encoded, deleted or upserted this time."""
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.domain.drops import ProductDrop, drops_root
    from assets_pkg.domain.search_models import SearchModels
    from assets_pkg.domain.settings import setting
    from assets_pkg.domain.settled import settled_key, settled_summary

    root = drops_root(drops_dir)
    state = SearchModels.path_of(artifacts_dir, setting("MILVUS_COLLECTION"))
    found = {}
    for name in names:
        art = DropArtifacts.at(artifacts_dir, name)
        try:
            summary = settled_summary(art, settled_key(ProductDrop(name, root / name), art, state))
        except Exception:  # whatever cannot be seen here, a run will say
            summary = None
        if summary is not None:
            found[name] = {**summary, "encoded": 0, "reused": (summary["encoded"] or 0) + (summary["reused"] or 0),
                           "upserted": 0, "deleted": 0}
    return found


def remember_settled(summaries: list[dict], drops_dir: str, artifacts_dir: str, switching: bool) -> None:
    """After a run: each drop it left with nothing to do (succeeded, no check failed at ERROR severity, nothing
    blocked or pending, no change of model under way) is recorded with its settled key; any other forgets its
    record."""
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.domain.drops import ProductDrop, drops_root
    from assets_pkg.domain.search_models import SearchModels
    from assets_pkg.domain.settings import setting
    from assets_pkg.domain.settled import record_settled, settled_key

    root = drops_root(drops_dir)
    state = SearchModels.path_of(artifacts_dir, setting("MILVUS_COLLECTION"))
    for s in summaries:
        art = DropArtifacts.at(artifacts_dir, s["drop"])
        key = None
        if s["ok"] and not switching and not s["blocked"] and not s["pending"] and not s["failed_checks"]:
            try:
                key = settled_key(ProductDrop(s["drop"], root / s["drop"]), art, state)
            except Exception:  # not knowable now: the next run runs, which is always right
                key = None
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record_settled(art, key, {**s, "settled_by": f"the run of {when}"})


def report(summaries: list[dict], as_json: bool) -> None:
    for s in summaries:
        if as_json:
            continue
        if s.get("settled_by"):
            print(f"{s['drop']}: nothing changed since {s['settled_by']}: answered without a Dagster run "
                  f"(--verify runs one anyway)", file=sys.stderr)
        if s["ok"]:
            print(
                f"{s['drop']}: {s['images']} images ({s['distinct']} distinct), {s['encoded']} encoded, {s['reused']} reused, "
                f"{len(s['rejected'])} rejected, {s['indexed']} indexed, {s['deleted']} deleted, "
                f"{len(s['generated'])}/{s['briefs']} campaign images"
                + (f", blocked: {', '.join(s['blocked'])}" if s["blocked"] else "")
            )
            for p in s["generated"]:
                print(f"  {p}")
        else:
            print(f"{s['drop']}: FAILED {s['error']}", file=sys.stderr)
    if as_json:
        print(json.dumps(summaries, indent=2))
    failed = [s for s in summaries if not s["ok"]]
    if failed and as_json:
        for s in failed:
            print(f"drop-studio: {s['drop']}: {s['error']}", file=sys.stderr)
    if failed:
        sys.exit(1)

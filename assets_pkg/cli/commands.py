"""`drop-studio`: sync drops, run the graph, search, serve the search page, from the command line (click).

Runs are recorded in the Dagster instance at DAGSTER_HOME (default
data/dagster_home), so `dagster dev` shows them afterwards. Heavy modules (Dagster, torch, pymilvus) are
imported by the commands that need them, so `--help` and bad arguments answer at once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import warnings

import click

warnings.filterwarnings("ignore", module="clip")
warnings.filterwarnings("ignore", message=".*pkg_resources.*")

from ..domain.store.rows import MAX_TOP_K  # noqa: E402
from ..run_results import asset_metadata, check_results, failure  # noqa: E402  (check_results: for the tests too)
from ..instance import open_instance, reap_dead_runs, sync_drops  # noqa: E402  (after the warning filters)


class CliError(click.ClickException):
    """A one-line error: printed as `drop-studio: error: ...`, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"drop-studio: error: {self.message}", err=True)


class _Commands(click.Group):
    def invoke(self, ctx: click.Context):
        from assets_pkg.domain.errors import StudioError

        try:
            return super().invoke(ctx)
        except StudioError as e:  # a stage's or a setting's one-line error
            raise CliError(str(e)) from None
        except click.UsageError as e:  # a bad option of a command: one line too, not the usage text
            raise CliError(e.format_message()) from None


TOP_K = click.IntRange(1, MAX_TOP_K)  # hits of one search, as the page and briefs allow


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Product drops -> CLIP -> Milvus -> campaign images."""


@cli.group()
def drops() -> None:
    """Manage product drops."""


@drops.command("sync")
def drops_sync() -> None:
    """Add a partition for every drop folder in DROPS_DIR."""
    from assets_pkg.domain.settings import setting

    instance = open_instance()
    names, new, invalid = sync_drops(instance, setting("DROPS_DIR"))
    for bad in invalid:
        print(f"skipped folder {bad!r}: not a valid drop name (letters, digits, '-', '_')", file=sys.stderr)
    for n in names:
        print(f"{n}{'  (new)' if n in new else ''}")


@drops.command("remove")
@click.argument("drop")
@click.option("--force", is_flag=True, help="even though the drop folder still exists")
def drops_remove(drop: str, force: bool) -> None:
    """Delete a drop's partition, Milvus rows and artifacts (not its folder)."""
    from assets_pkg.assets import product_drops
    from assets_pkg.domain import storage
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.domain.drops import ProductDrop
    from assets_pkg.domain.settings import setting
    from assets_pkg.resources import DropLibrary, MilvusResource, search_models

    folder = ProductDrop.at(setting("DROPS_DIR"), drop)
    if storage.is_folder(folder.folder) and not force:
        raise CliError(f"{folder.folder} still exists; move it away first (or pass --force to drop its data anyway)")
    instance = open_instance()
    milvus = MilvusResource()
    rows = 0
    # Every model's collections (domain/search_models.py); MILVUS_COLLECTION when no model was ever recorded.
    collections = [m.collection for m in search_models(DropLibrary(), milvus).models()] or [None]
    for collection in collections:
        with milvus.store(collection=collection) as store:
            rows += store.remove_drop(folder.name) if store.exists() else 0
        with milvus.campaign_store(collection=collection) as store:
            rows += store.remove_drop(folder.name) if store.exists() else 0
    storage.remove_tree(DropArtifacts.at(setting("ARTIFACTS_DIR"), folder.name).root)
    had_partition = folder.name in instance.get_dynamic_partitions(product_drops.name)
    if had_partition:
        instance.delete_dynamic_partition(product_drops.name, folder.name)
    print(f"{folder.name}: deleted {rows} Milvus rows, artifacts and "
          f"{'the partition' if had_partition else 'no partition (there was none)'}")

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


def still_on_serving(models) -> str:
    """The line the CLI says while a change of model is being built."""
    return (f"search answers from {models.serving.id} until every drop is built for {models.target.id} "
            f"(drop-studio models)")


def quiet(log_level: str = "CRITICAL") -> dict:
    """Run config: Dagster's console log at `log_level` (the CLI prints its own lines)."""
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


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


@cli.command()
@click.argument("query")
@click.option("--drop", help="only this drop's images")
@click.option("--top-k", type=TOP_K, default=10, show_default=True)
@click.option("--sku", help="only this product's images")
@click.option("--category", help="only this category (any case)")
@click.option("--color", help="only this colour (any case)")
@click.option("--json", "as_json", is_flag=True)
def search(query: str, drop: str | None, top_k: int, sku: str | None, category: str | None, color: str | None,
           as_json: bool) -> None:
    """Search by text: each hit's similarity to the query (cosine, CLIP), why it was found, its file and
    product, in the fused order (exact SKU, then CLIP and BM25 fused; --json has the rank score too)."""
    from assets_pkg.domain.drops import validate_drop_name
    from assets_pkg.domain.products import InvalidFilter, filter_value
    from assets_pkg.domain.settings import setting
    from assets_pkg.domain.storage import location
    from assets_pkg.resources import ClipModel, DropLibrary, MilvusResource, search_models

    if not query.strip():
        raise CliError("the search query is empty")
    if drop:
        validate_drop_name(drop)
    where = {f: v for f, v in (("sku", sku), ("category", category), ("color", color)) if v}
    for f, v in where.items():
        try:
            filter_value(f, v)
        except InvalidFilter as e:
            raise CliError(f"--{e}") from None
    milvus, clip = MilvusResource(), ClipModel()
    models = search_models(DropLibrary(), milvus)
    serving = models.serving  # the model search answers from; None before any drop was built
    if serving is not None and models.target is not None:
        print(f"drop-studio: {still_on_serving(models)}", file=sys.stderr)
    store = milvus.store(collection=serving.collection if serving else None)
    encoder = clip.serving_encoder(serving) if serving else clip.encoder()
    with store:
        if drop and store.count(drop) == 0:
            raise CliError(f"drop {drop!r} has no images in collection {store.collection!r} (run it first)")
        note = store.search_note()
        if note:
            print(f"drop-studio: {note}", file=sys.stderr)
        hits = store.search(encoder.embed_texts([query]), drop=drop, top_k=top_k, texts=[query], where=where)[0]
    root = location("DROPS_DIR", setting("DROPS_DIR"))
    rows = [{"path": str(root / h.drop / h.path), "drop": h.drop, "similarity": round(h.similarity, 4),
             "why": list(h.why), "words": list(h.words), "score": round(h.score, 4), "sku": h.sku,
             "name": h.name, "match": h.match} for h in hits]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            product = f"  {r['sku']} {r['name']}".rstrip() if r["sku"] or r["name"] else ""
            print(f"{r['similarity']:.2f}  {why_line(r['why'], r['words']):<24}  {r['path']}{product}")
        if not rows:
            print("no results", file=sys.stderr)


def why_line(why: list[str], words: list[str]) -> str:
    """`sku`, `words: red apple`, `picture`, joined: why a hit was found, as the page says it."""
    return " + ".join(f"words: {' '.join(words)}" if w == "words" else w for w in why)


@cli.command()
@click.option("--host", help="default SEARCH_HOST (loopback); beyond loopback only with DROP_STUDIO_TOKEN set")
@click.option("--port", type=click.IntRange(1, 65535), help="default SEARCH_PORT")
def serve(host: str | None, port: int | None) -> None:
    """The search page and JSON API for the people who pick pictures."""
    from assets_pkg.domain.settings import setting
    from assets_pkg.web.server import serve as serve_page

    serve_page(host or setting("SEARCH_HOST"), port or setting("SEARCH_PORT"),
               say=lambda line: print(line, file=sys.stderr))


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """The embedding models: which one search answers from, and per drop each model's images.

    Each model has its own collection; after CLIP_MODEL changes, search moves to the new model once every
    drop is built for it (README, "Switching models")."""
    if ctx.invoked_subcommand is not None:
        return
    from assets_pkg.resources import DropLibrary, MilvusResource, search_models
    from assets_pkg.stages.embeddings.logic import embeddings_info

    library = DropLibrary()
    state = search_models(library, MilvusResource())
    if state.serving is None:
        raise CliError("no model has built a collection yet: run a drop first (drop-studio run)")
    drops = state.drops()
    progress = state.progress(drops)
    rows = []
    for drop in drops:
        art = library.artifacts(drop)
        for m in state.models():
            record = state.record(art, m)
            info = embeddings_info(m.files(art))
            if not record and info.get("model_id") != m.id:
                continue
            rows.append({"drop": drop, "model": m.id, "serving": m.id == state.serving.id,
                         "target": state.target is not None and m.id == state.target.id,
                         "encoded": info.get("rows", 0) if info.get("model_id") == m.id else 0,
                         "in_collection": record.get("indexed", 0),
                         "built": progress[drop]["built"] if state.target and m.id == state.target.id else None})
    summary = {"serving": {"model": state.serving.id, "collection": state.serving.collection},
               "target": {"model": state.target.id, "collection": state.target.collection,
                          "drops_built": sum(p["built"] for p in progress.values()),
                          "drops": len(drops)} if state.target else None,
               "models": [{"model": m.id, "weights": m.spec, "collection": m.collection} for m in state.models()],
               "drops": rows, "history": state.state["history"]}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(f"search answers from {state.serving.id} (collection {state.serving.collection})")
    if state.target:
        t = summary["target"]
        print(f"building {t['model']} (collection {t['collection']}): {t['drops_built']} of {t['drops']} drops "
              f"built; search moves to it when every drop is")
    width = max([len(r["model"]) for r in rows] + [5])
    print(f"\n{'drop':<24} {'model':<{width}}  {'encoded':>8}  {'in Milvus':>9}  state")
    for r in rows:
        state_word = "serving" if r["serving"] else ("built" if r["built"] else "building") if r["target"] else ""
        print(f"{r['drop']:<24} {r['model']:<{width}}  {r['encoded']:>8}  {r['in_collection']:>9}  {state_word}")


@models.command("switch")
def models_switch() -> None:
    """Move search to the model being built, if every drop is built for it (a run of search_model, recorded
    in the Dagster instance as a click in the UI would be)."""
    from dagster import materialize

    from assets_pkg.assets import search_assets
    from assets_pkg.resources import DropLibrary, MilvusResource, build_resources, search_models

    result = materialize(search_assets, instance=open_instance(), resources=build_resources(), raise_on_error=False,
                         tags={"launched_by": "drop-studio"}, run_config=quiet())
    if not result.success:
        raise CliError(failure(result, None) or "the run of search_model failed")
    state = search_models(DropLibrary(), MilvusResource())
    facts = asset_metadata(result, "search_model", None)
    if facts["switched"]:
        print(f"search now answers from {state.serving.id} (collection {state.serving.collection})")
    elif state.target is None:
        print(f"search answers from {state.serving.id}; no other model is being built")
    else:
        raise CliError(f"search stays on {state.serving.id}: {facts['drops_built']} of {facts['drops']} drops built "
                       f"for {state.target.id} (drop-studio models)")


@models.command("compare")
@click.argument("model_a")
@click.argument("model_b")
@click.option("--query", "-q", "queries", multiple=True, help="a query of your own (repeatable), over every drop")
@click.option("--top-k", type=TOP_K, default=10, show_default=True)
@click.option("--no-briefs", is_flag=True, help="only the queries given, not every brief's")
@click.option("--sheets", help="folder for a contact sheet per query (default: <ARTIFACTS_DIR>/_models/compare/...)")
@click.option("--clip-only", is_flag=True, help="the models alone: no BM25 over names and catalogs, no SKU pinning")
@click.option("--json", "as_json", is_flag=True)
def models_compare(model_a: str, model_b: str, queries: tuple[str, ...], top_k: int, no_briefs: bool,
                   sheets: str | None, clip_only: bool, as_json: bool) -> None:
    """Every brief's query and yours on two built models: per query the overlap of their top k, the images
    only one found, and a contact sheet of both. A model is its id or its CLIP_MODEL value."""
    from assets_pkg.domain import storage
    from assets_pkg.domain.compare import Query, compare, comparison_sheet
    from assets_pkg.domain.search_models import model_key
    from assets_pkg.domain.sheets import to_jpeg
    from assets_pkg.resources import ClipModel, DropLibrary, MilvusResource, search_models
    from assets_pkg.stages.briefs.logic import read_briefs

    library, milvus, clip = DropLibrary(), MilvusResource(), ClipModel()
    state = search_models(library, milvus)
    chosen = []
    for arg in (model_a, model_b):
        entry = state.find(arg) or state.find(ClipModel(model=arg).model_id())
        if entry is None:
            raise CliError(f"model {arg!r} has no collection yet: set CLIP_MODEL to it and run the drops "
                           f"(known: {', '.join(m.id for m in state.models()) or 'none'})")
        chosen.append(entry)
    wanted = [Query(q.strip()) for q in queries if q.strip()]
    if not no_briefs:
        for drop in state.drops():
            wanted += [Query(b.query, drop, b.where, f"{drop}/{b.id}") for b in read_briefs(library.artifacts(drop))
                       if b.query]
    if not wanted:
        raise CliError("no query to compare: give --query, or run drops that have briefs")

    with milvus.store() as store:
        def searcher(entry):
            def search(q: Query):
                store.use_collection(entry.collection)
                vector = clip.serving_encoder(entry).embed_texts([q.text])
                return store.search(vector, drop=q.drop, top_k=top_k, texts=None if clip_only else [q.text],
                                    where=q.where)[0]
            return search

        results = compare(wanted, *(searcher(e) for e in chosen))
    clip.close()
    if sheets:
        folder = storage.location("--sheets", sheets)
    else:  # ours: the sheets of an earlier comparison of the same two models are replaced
        folder = state.root / "_models" / "compare" / f"{model_key(chosen[0].id)}--{model_key(chosen[1].id)}"
        storage.remove_tree(folder)
    root = storage.location("DROPS_DIR", library.get("drops_dir"))
    written = []
    for i, c in enumerate(results, 1):
        sheet = comparison_sheet(c, lambda h: root / h.drop / h.path, (chosen[0].id, chosen[1].id))
        path = folder / f"{i:03d}-{model_key(c.query.text)}.jpg"
        storage.write_atomic(path, to_jpeg(sheet, max_side=2400, quality=85))
        written.append(str(path))
    if as_json:
        print(json.dumps([{**c.to_dict(), "sheet": p} for c, p in zip(results, written)], indent=2))
        return
    print(f"A = {chosen[0].id} ({chosen[0].collection})\nB = {chosen[1].id} ({chosen[1].collection})\n")
    print(f"{'#':>3}  {'overlap':>7}  {'only A':>6}  {'only B':>6}  query")
    for i, c in enumerate(results, 1):
        print(f"{i:>3}  {c.overlap:>7.0%}  {len(c.only_a):>6}  {len(c.only_b):>6}  {c.query.text!r} ({c.query.source})")
        for name, only in (("A", c.only_a), ("B", c.only_b)):
            if only:
                print(f"{'':>5}only {name}: {', '.join(only)}")
    mean = sum(c.overlap for c in results) / len(results)
    print(f"\nmean overlap {mean:.0%} over {len(results)} queries; contact sheets in {folder}")


@cli.command("make-checkpoint")
@click.option("--out", required=True, help="where to write the checkpoint")
@click.option("--arch", default="tiny", show_default=True,
              help="tiny (trained here), vit-b-32 (random weights), or open_clip:<architecture> (random weights, "
                   "for CLIP_MODEL=open_clip:<architecture>:<file>)")
@click.option("--steps", type=click.IntRange(min=1), help="training steps of the tiny model")
def make_checkpoint(out: str, arch: str, steps: int | None) -> None:
    """Write a local CLIP checkpoint (tiny trained, ViT-B/32-shaped, or an open_clip architecture's shapes)."""
    from assets_pkg.domain.checkpoints import write_checkpoint

    path = write_checkpoint(out, arch, steps, log=lambda m: print(m, file=sys.stderr))
    print(path)


def main(argv: list[str] | None = None) -> None:
    from assets_pkg.domain.settings import adopt_renamed_settings

    adopt_renamed_settings()
    cli.main(args=argv, prog_name="drop-studio")


if __name__ == "__main__":
    main()

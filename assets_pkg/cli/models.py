"""`drop-studio models [switch | compare]` and `make-checkpoint`: the embedding models and their collections."""

from __future__ import annotations

import json
import sys

import click

from ..instance import open_instance
from ..run_results import asset_metadata, failure
from .app import TOP_K, CliError, cli, quiet


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

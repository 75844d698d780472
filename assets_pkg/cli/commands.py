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

from ..run_results import asset_metadata, check_results, failure  # noqa: E402  (check_results: for the tests too)
from .instance import open_instance, reap_dead_runs, sync_drops  # noqa: E402  (after the warning filters)


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
    from assets_pkg.resources import MilvusResource

    folder = ProductDrop.at(setting("DROPS_DIR"), drop)
    if storage.is_folder(folder.folder) and not force:
        raise CliError(f"{folder.folder} still exists; move it away first (or pass --force to drop its data anyway)")
    instance = open_instance()
    with MilvusResource().store() as store:
        rows = store.remove_drop(folder.name)
    with MilvusResource().campaign_store() as store:
        rows += store.remove_drop(folder.name) if store.exists() else 0
    storage.remove_tree(DropArtifacts.at(setting("ARTIFACTS_DIR"), folder.name).root)
    had_partition = folder.name in instance.get_dynamic_partitions(product_drops.name)
    if had_partition:
        instance.delete_dynamic_partition(product_drops.name, folder.name)
    print(f"{folder.name}: deleted {rows} Milvus rows, artifacts and "
          f"{'the partition' if had_partition else 'no partition (there was none)'}")

def summarize(drop: str, result, artifacts_dir: str) -> dict:
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
        "rejected": rejected_files(art),
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

    from assets_pkg.assets import drop_assets, drop_checks
    from assets_pkg.domain.artifacts import check_artifacts_dir
    from assets_pkg.domain.settings import setting
    from assets_pkg.resources import MilvusResource, build_resources

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

    def run_one(part: list[str]):
        if not as_json:
            print(f"== {', '.join(part)}", file=sys.stderr)
        one = {"partition_key": part[0]} if len(part) == 1 else {}
        span = {} if one else {RANGE_START_TAG: part[0], RANGE_END_TAG: part[-1]}
        return materialize(
            [*drop_assets, *drop_checks],
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags={"drop": part[0] if one else f"{part[0]}..{part[-1]}", "drops": str(len(part)),
                  "launched_by": "drop-studio", "drop_studio/pid": str(os.getpid()),
                  "drop_studio/host": socket.gethostname(), **span},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}},
                        **({"ops": {"reference_images": {"config": {"search_again": True}}}}
                           if search_again else {})},
            **one,
        )

    settled = run_in_batches(run_one, wanted, order, setting("DROP_BATCH"))
    summaries = []
    for drop in wanted:
        s = summarize(drop, settled[drop], artifacts_dir)
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
@click.option("--top-k", type=int, default=10, show_default=True)
@click.option("--sku", help="only this product's images")
@click.option("--category", help="only this category (any case)")
@click.option("--color", help="only this colour (any case)")
@click.option("--json", "as_json", is_flag=True)
def search(query: str, drop: str | None, top_k: int, sku: str | None, category: str | None, color: str | None,
           as_json: bool) -> None:
    """Text-to-image search."""
    from assets_pkg.domain.drops import validate_drop_name
    from assets_pkg.domain.products import InvalidFilter, filter_value
    from assets_pkg.domain.settings import setting
    from assets_pkg.domain.storage import location
    from assets_pkg.domain.store import MAX_TOP_K
    from assets_pkg.resources import ClipModel, MilvusResource

    if not query.strip():
        raise CliError("the search query is empty")
    if not 1 <= top_k <= MAX_TOP_K:
        raise CliError(f"--top-k must be from 1 to {MAX_TOP_K}, got {top_k}")
    if drop:
        validate_drop_name(drop)
    where = {f: v for f, v in (("sku", sku), ("category", category), ("color", color)) if v}
    for f, v in where.items():
        try:
            filter_value(f, v)
        except InvalidFilter as e:
            raise CliError(f"--{e}") from None
    store = MilvusResource().store()
    encoder = ClipModel().encoder()
    with store:
        if drop and store.count(drop) == 0:
            raise CliError(f"drop {drop!r} has no images in collection {store.collection!r} (run it first)")
        note = store.search_note()
        if note:
            print(f"drop-studio: {note}", file=sys.stderr)
        hits = store.search(encoder.embed_texts([query]), drop=drop, top_k=top_k, texts=[query], where=where)[0]
    root = location("DROPS_DIR", setting("DROPS_DIR"))
    rows = [{"path": str(root / h.drop / h.path), "drop": h.drop, "score": round(h.score, 4), "sku": h.sku,
             "name": h.name, "match": h.match} for h in hits]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            product = f"  {r['sku']} {r['name']}".rstrip() if r["sku"] or r["name"] else ""
            print(f"{r['score']:.4f}  {r['path']}{product}")
        if not rows:
            print("no results", file=sys.stderr)


@cli.command()
@click.option("--host", help="default SEARCH_HOST (loopback); beyond loopback only with DROP_STUDIO_TOKEN set")
@click.option("--port", type=int, help="default SEARCH_PORT")
def serve(host: str | None, port: int | None) -> None:
    """The search page and JSON API for the people who pick pictures."""
    from assets_pkg.domain.settings import setting
    from assets_pkg.web.server import serve as serve_page

    serve_page(host or setting("SEARCH_HOST"), port or setting("SEARCH_PORT"),
               say=lambda line: print(line, file=sys.stderr))


@cli.command("make-checkpoint")
@click.option("--out", required=True, help="where to write the checkpoint")
@click.option("--arch", default="tiny", show_default=True,
              help="tiny (trained here), vit-b-32 (random weights), or open_clip:<architecture> (random weights, "
                   "for CLIP_MODEL=open_clip:<architecture>:<file>)")
@click.option("--steps", type=int, help="training steps of the tiny model")
def make_checkpoint(out: str, arch: str, steps: int | None) -> None:
    """Write a local CLIP checkpoint (tiny trained, ViT-B/32-shaped, or an open_clip architecture's shapes)."""
    from assets_pkg.domain.checkpoints import write_checkpoint

    path = write_checkpoint(out, arch, steps, log=lambda m: print(m, file=sys.stderr))
    print(path)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="drop-studio")


if __name__ == "__main__":
    main()

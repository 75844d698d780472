"""`drop-studio`: sync drops, run the graph, search, from the command line.

Runs are recorded in the Dagster instance at DAGSTER_HOME (default
data/dagster_home), so `dagster dev` shows them afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import warnings

warnings.filterwarnings("ignore", module="clip")
warnings.filterwarnings("ignore", message=".*pkg_resources.*")

from .instance import open_instance, reap_dead_runs, sync_drops  # noqa: E402  (after the warning filters)

class CliError(Exception):
    pass


def cmd_drops_sync(args) -> int:
    from assets_pkg.domain.settings import setting

    instance = open_instance()
    names, new, invalid = sync_drops(instance, setting("DROPS_DIR"))
    for bad in invalid:
        print(f"skipped folder {bad!r}: not a valid drop name (letters, digits, '-', '_')", file=sys.stderr)
    for n in names:
        print(f"{n}{'  (new)' if n in new else ''}")
    return 0


def cmd_drops_remove(args) -> int:
    from assets_pkg.assets import product_drops
    from assets_pkg.domain import storage
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.domain.drops import ProductDrop
    from assets_pkg.domain.settings import setting
    from assets_pkg.resources import MilvusResource

    drop = ProductDrop.at(setting("DROPS_DIR"), args.drop)
    if storage.is_folder(drop.folder) and not args.force:
        raise CliError(f"{drop.folder} still exists; move it away first (or pass --force to drop its data anyway)")
    instance = open_instance()
    with MilvusResource().store() as store:
        rows = store.remove_drop(drop.name)
    with MilvusResource().campaign_store() as store:
        rows += store.remove_drop(drop.name) if store.exists() else 0
    storage.remove_tree(DropArtifacts.at(setting("ARTIFACTS_DIR"), drop.name).root)
    had_partition = drop.name in instance.get_dynamic_partitions(product_drops.name)
    if had_partition:
        instance.delete_dynamic_partition(product_drops.name, drop.name)
    print(f"{drop.name}: deleted {rows} Milvus rows, artifacts and "
          f"{'the partition' if had_partition else 'no partition (there was none)'}")
    return 0


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                return f"{event.step_key}: {data.user_failure_data.description}"
            err = data.error
            while err is not None and err.cause is not None:  # the user's exception, not Dagster's wrapper
                err = err.cause
            msg = (err.message if err else "failed").strip().splitlines()
            return f"{event.step_key}: {msg[-1] if msg else 'failed'}"
    return "run failed"


def check_results(result) -> dict[str, bool]:
    """Asset check name -> passed, for the checks a run evaluated."""
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _meta(result, asset: str) -> dict:
    events = result.asset_materializations_for_node(asset)
    if not events:
        return {}
    return {k: getattr(v, "value", v) for k, v in events[-1].metadata.items()}


def summarize(drop: str, result, artifacts_dir: str) -> dict:
    from assets_pkg.domain.artifacts import DropArtifacts

    art = DropArtifacts.at(artifacts_dir, drop)
    raw, cat, emb, col, camp = (_meta(result, a) for a in ("raw_product_images", "product_catalog", "clip_embeddings",
                                                          "product_image_collection", "campaign_images"))
    blocked = camp.get("blocked") or []
    return {
        "drop": drop,
        "ok": result.success,
        "images": raw.get("images"),
        "distinct": raw.get("distinct_contents"),
        "encoded": emb.get("encoded"),
        "reused": emb.get("reused"),
        "rejected": art.rejected_files(),
        "products": cat.get("products"),
        "catalog_rejected": art.read_catalog().rejected if cat else [],
        "indexed": col.get("indexed"),
        "upserted": col.get("upserted"),
        "deleted": col.get("deleted"),
        "briefs": len(art.read_briefs()),
        "generated": sorted(str(p) for p in art.campaign_pngs()) if camp else [],
        "blocked": [b["brief"] for b in blocked],
        "checks": check_results(result),
        "error": None if result.success else _failure_message(result),
    }


def cmd_run(args) -> int:
    from dagster import materialize

    from assets_pkg.assets import drop_assets, drop_checks
    from assets_pkg.domain.artifacts import check_artifacts_dir
    from assets_pkg.domain.settings import setting
    from assets_pkg.resources import MilvusResource, build_resources

    resources = build_resources(progress_bar=sys.stderr.isatty() and not args.json)
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
    wanted = args.drop or names
    unknown = [d for d in wanted if d not in names]
    if unknown:
        raise CliError(f"no such drop in {drops_dir}: {', '.join(unknown)} (known: {', '.join(names) or 'none'})")
    summaries = []
    for drop in wanted:
        if not args.json:
            print(f"== {drop}", file=sys.stderr)
        result = materialize(
            [*drop_assets, *drop_checks],
            partition_key=drop,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags={"drop": drop, "launched_by": "drop-studio", "drop_studio/pid": str(os.getpid()),
                  "drop_studio/host": socket.gethostname()},
            run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}},
                        **({"ops": {"reference_images": {"config": {"search_again": True}}}}
                           if args.search_again else {})},
        )
        s = summarize(drop, result, artifacts_dir)
        summaries.append(s)
        if not args.json:
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
    if args.json:
        print(json.dumps(summaries, indent=2))
    failed = [s for s in summaries if not s["ok"]]
    if failed and args.json:
        for s in failed:
            print(f"drop-studio: {s['drop']}: {s['error']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_search(args) -> int:
    from assets_pkg.domain.catalog import FILTER_FIELDS, InvalidFilter, filter_value
    from assets_pkg.domain.drops import validate_drop_name
    from assets_pkg.domain.settings import setting
    from assets_pkg.domain.storage import location
    from assets_pkg.resources import ClipModel, MilvusResource
    from assets_pkg.domain.store import MAX_TOP_K

    if not args.query.strip():
        raise CliError("the search query is empty")
    if not 1 <= args.top_k <= MAX_TOP_K:
        raise CliError(f"--top-k must be from 1 to {MAX_TOP_K}, got {args.top_k}")
    if args.drop:
        validate_drop_name(args.drop)
    where = {f: getattr(args, f) for f in FILTER_FIELDS if getattr(args, f)}
    for f, v in where.items():
        try:
            filter_value(f, v)
        except InvalidFilter as e:
            raise CliError(f"--{e}") from None
    store = MilvusResource().store()
    encoder = ClipModel().encoder()
    with store:
        if args.drop and store.count(args.drop) == 0:
            raise CliError(f"drop {args.drop!r} has no images in collection {store.collection!r} (run it first)")
        note = store.search_note()
        if note:
            print(f"drop-studio: {note}", file=sys.stderr)
        hits = store.search(encoder.embed_texts([args.query]), drop=args.drop, top_k=args.top_k,
                            texts=[args.query], where=where)[0]
    root = location("DROPS_DIR", setting("DROPS_DIR"))
    rows = [{"path": str(root / h.drop / h.path), "drop": h.drop, "score": round(h.score, 4), "sku": h.sku,
             "name": h.name, "match": h.match} for h in hits]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            product = f"  {r['sku']} {r['name']}".rstrip() if r["sku"] or r["name"] else ""
            print(f"{r['score']:.4f}  {r['path']}{product}")
        if not rows:
            print("no results", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    serve(args.host, args.port, say=lambda line: print(line, file=sys.stderr))
    return 0


def cmd_checkpoint(args) -> int:
    from assets_pkg.domain.checkpoints import write_checkpoint

    path = write_checkpoint(args.out, args.arch, args.steps, log=lambda m: print(m, file=sys.stderr))
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="drop-studio", description="Product drops -> CLIP -> Milvus -> campaign images")
    sub = p.add_subparsers(dest="command", required=True)

    drops = sub.add_parser("drops", help="manage product drops")
    dsub = drops.add_subparsers(dest="drops_command", required=True)
    dsync = dsub.add_parser("sync", help="add a partition for every drop folder in DROPS_DIR")
    dsync.set_defaults(fn=cmd_drops_sync)
    drm = dsub.add_parser("remove", help="delete a drop's partition, Milvus rows and artifacts (not its folder)")
    drm.add_argument("drop")
    drm.add_argument("--force", action="store_true", help="even though the drop folder still exists")
    drm.set_defaults(fn=cmd_drops_remove)

    run = sub.add_parser("run", help="materialize the whole graph for drops (default: all)")
    run.add_argument("--drop", action="append", help="a drop to run (repeatable)")
    run.add_argument("--json", action="store_true", help="print one JSON object per drop")
    run.add_argument("--search-again", action="store_true",
                     help="search every brief's references again, although its inputs are unchanged")
    run.add_argument("--log-level", default="CRITICAL",
                     help="Dagster console log level; INFO shows per-batch progress (default: summaries only)")
    run.set_defaults(fn=cmd_run)

    search = sub.add_parser("search", help="text-to-image search")
    search.add_argument("query")
    search.add_argument("--drop")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--sku", help="only this product's images")
    search.add_argument("--category", help="only this category (any case)")
    search.add_argument("--color", help="only this colour (any case)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(fn=cmd_search)

    srv = sub.add_parser("serve", help="the search page and JSON API for the people who pick pictures")
    srv.add_argument("--host", default="127.0.0.1", help="beyond loopback only with DROP_STUDIO_TOKEN set")
    srv.add_argument("--port", type=int, default=8787)
    srv.set_defaults(fn=cmd_serve)

    ck = sub.add_parser("make-checkpoint", help="write a local CLIP checkpoint (tiny trained, or ViT-B/32-shaped)")
    ck.add_argument("--out", required=True)
    ck.add_argument("--arch", choices=["tiny", "vit-b-32"], default="tiny")
    ck.add_argument("--steps", type=int, default=600)
    ck.set_defaults(fn=cmd_checkpoint)
    return p


def main(argv=None) -> int:
    from assets_pkg.domain.errors import StudioError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (CliError, StudioError) as e:
        print(f"drop-studio: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

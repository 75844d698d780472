"""`drop-studio drops sync | remove | import`: drop partitions, a removed drop's rows, a drop from a store's export."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..instance import open_instance, sync_drops
from .app import CliError, cli


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


@drops.command("import")
@click.argument("export", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--drop", "drop", required=True, help="the drop to make, or to bring up to date with the export")
def drops_import(export: Path, drop: str) -> None:
    """Make a drop from a Shopify product export or a Merchant Center feed (TSV or XML): the export is copied
    into the drop's folder, the pictures it names are fetched (only what changed, the next time) and its
    products.csv is written; `drop-studio run` then does the rest."""
    from assets_pkg.domain import storage
    from assets_pkg.domain.drops import validate_drop_name
    from assets_pkg.domain.errors import InvalidDropName
    from assets_pkg.domain.settings import setting
    from assets_pkg.domain.storefront.exports import ExportError
    from assets_pkg.domain.storefront.fetch import allowed_hosts
    from assets_pkg.domain.storefront.importer import import_export

    try:
        validate_drop_name(drop)
    except InvalidDropName as e:
        raise CliError(f"--drop: {e}") from None
    drops_dir = storage.location("DROPS_DIR", setting("DROPS_DIR"))
    storage.check_access(drops_dir)  # a missing bucket is one line before any picture is fetched
    try:
        report = import_export(export, drops_dir / drop, allowed_hosts(), setting("FETCH_MAX_BYTES"),
                               setting("MAX_IMAGE_PIXELS"))
    except ExportError as e:
        raise CliError(str(e)) from None
    for line in report.rejected + report.failed:
        print(f"drop-studio: {line}", file=sys.stderr)
    print(f"{drop}: {report.pictures} pictures: {report.fetched} fetched ({report.bytes} bytes), {report.unchanged} "
          f"unchanged, {report.removed} removed, {len(report.failed)} failed; {len(report.rejected)} rows of "
          f"{export.name} not read. Next: drop-studio run --drop {drop}")
    if report.failed:
        sys.exit(1)

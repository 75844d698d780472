"""`drop-studio drops sync | remove`: drop partitions and a removed drop's rows."""

from __future__ import annotations

import sys

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

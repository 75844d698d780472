"""Each stage's rules in the domain, without Dagster: what is reused, what is written, what is reported."""

from __future__ import annotations

import numpy as np
import pytest

from assets_pkg.domain.artifacts import DropArtifacts
from assets_pkg.domain.drops import ProductDrop
from assets_pkg.domain.encoder import ClipEncoder
from assets_pkg.domain.errors import BriefsError
from assets_pkg.domain.model_id import clip_model_id
from assets_pkg.domain.store import ProductImageStore, row_id
from assets_pkg.stages.briefs.logic import Brief, load_briefs, write_briefs
from assets_pkg.stages.campaigns.logic import campaign_dir
from assets_pkg.stages.collection.logic import sync_collection
from assets_pkg.stages.embeddings.logic import (embed_drop, embeddings_info, partial_dir, read_embeddings,
                                                rejected_files, write_partial_batch)
from assets_pkg.stages.references.logic import find_references
from assets_pkg.stages.scan.logic import read_manifest, update_manifest
from conftest import draw_drop

SPEC = [("red", "circle", 2), ("blue", "square", 2), ("green", "triangle", 2)]


def _never(*_):
    raise AssertionError("must not be called")


@pytest.fixture
def scanned(tmp_path):
    drop = ProductDrop("spring", tmp_path / "drops" / "spring")
    draw_drop(drop.folder, spec=SPEC)
    art = DropArtifacts.at(tmp_path / "artifacts", "spring")
    assert update_manifest(drop, art, 10_000_000).changed
    return drop, art


def test_an_unchanged_folder_leaves_the_manifest_file_alone(scanned):
    drop, art = scanned
    before = (art.root / "manifest.parquet").stat().st_mtime_ns
    report = update_manifest(drop, art, 10_000_000)
    assert not report.changed and len(report.manifest.images) == 6
    assert (art.root / "manifest.parquet").stat().st_mtime_ns == before


def test_embedding_writer_resumes_from_batches_and_records_unreadable_files_in_its_own_file(scanned, tiny_clip):
    drop, art = scanned
    model_id = clip_model_id(str(tiny_clip))
    encoder = ClipEncoder(str(tiny_clip), batch_size=2, num_workers=0)
    # A batch an interrupted run finished: kept, not encoded again.
    first = sorted(read_manifest(art).images["path"])[:2]
    done = encoder.embed_images([drop.folder / p for p in first])
    shas = list(read_manifest(art).images.set_index("path").loc[first, "sha256"])
    write_partial_batch(art, shas, done.vectors, model_id)
    # A file replaced by garbage after the scan: PIL accepted it then, the encoder cannot read it now.
    (drop.folder / "green_triangle_1.png").write_bytes(b"not a png any more")
    manifest_before = (art.root / "manifest.parquet").read_bytes()

    report = embed_drop(drop, art, model_id, lambda: encoder)
    assert (report.resumed, report.encoded, report.vectors) == (2, 3, 5)
    assert [r["file"] for r in report.rejected] == ["green_triangle_1.png"]
    assert "cannot decode" in report.rejected[0]["reason"]
    assert (art.root / "manifest.parquet").read_bytes() == manifest_before  # the scan's file, untouched
    assert embeddings_info(art)["rejected"] == report.rejected
    assert [r["file"] for r in rejected_files(art)] == ["green_triangle_1.png"]
    assert not partial_dir(art).exists()  # flushed into the final file
    sha, vecs, _ = read_embeddings(art)
    assert len(sha) == 5 and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)

    # Same bytes, same model: nothing to encode, the model is not even loaded, the file not rewritten.
    mtime = (art.root / "embeddings.parquet").stat().st_mtime_ns
    again = embed_drop(drop, art, model_id, _never)
    assert (again.encoded, again.reused, again.written, len(again.rejected)) == (0, 5, False, 1)
    assert (art.root / "embeddings.parquet").stat().st_mtime_ns == mtime


def test_sync_drop_reports_exact_upserts_deletes_and_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(4, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = [{"sha256": f"{i:064x}", "path": f"p{i}.png", "aliases": [], "width": 1, "height": 1, "vector": vecs[i]}
            for i in range(4)]
    with ProductImageStore(str(tmp_path / "m.db"), collection="t") as store:
        first = store.sync_drop("d", rows[:3], 8)
        assert (first.upserted, first.deleted, first.unchanged) == (3, 0, 0)
        renamed = {**rows[1], "path": "renamed.png"}
        second = store.sync_drop("d", [rows[0], renamed, rows[3]], 8)
        assert (second.upserted, second.deleted, second.unchanged) == (2, 1, 1)
        assert second.ids == {row_id("d", r["sha256"]) for r in (rows[0], rows[1], rows[3])}
        assert store.rows_of_drop("d")[row_id("d", rows[1]["sha256"])][0] == "renamed.png"
        assert store.sync_drop("d", [rows[0], renamed, rows[3]], 8, rewrite_all=True).upserted == 3


def test_collection_and_references_skip_milvus_and_the_model_when_inputs_are_unchanged(scanned, tiny_clip, tmp_path):
    drop, art = scanned
    encoder = ClipEncoder(str(tiny_clip))
    embed_drop(drop, art, encoder.model_id, lambda: encoder)
    uri = str(tmp_path / "milvus.db")

    def store():
        return ProductImageStore(uri, collection="t")

    first = sync_collection("spring", art, store, uri, "t", uri)
    assert (first.upserted, first.indexed, first.matches) == (6, 6, True)
    second = sync_collection("spring", art, _never, uri, "t", uri)  # the Lite file vouches for the rows
    assert (second.ids, second.indexed, second.matches, second.rows_digest) == (None, 6, True, first.rows_digest)

    write_briefs(art, [Brief(id="reds", prompt="p", query="a red circle", top_k=2)])
    refs = find_references("spring", art, lambda: encoder, store)
    assert refs.searched and {r["path"] for r in refs.refs["reds"]} == {"red_circle_0.png", "red_circle_1.png"}
    kept = find_references("spring", art, _never, _never)
    assert not kept.searched and kept.refs == refs.refs
    write_briefs(art, [Brief(id="reds", prompt="p", query="a red circle", top_k=1)])  # a changed brief searches
    assert find_references("spring", art, lambda: encoder, store).count == 1


@pytest.mark.parametrize("line, message", [
    ('top_k: "3"', "top_k must be an integer from 1 to 100, got '3'"),
    ("variants: true", "variants must be an integer from 1 to 4, got True"),
    ("image_size: 3K", "image_size '3K' is not one of 512, 1K, 2K, 4K"),
    ("id: bad id", "id must be 1-64 letters, digits, '-' or '_'"),
])
def test_briefs_are_strict_and_say_which_brief_and_key(tmp_path, line, message):
    path = tmp_path / "briefs.yaml"
    key = line.split(":")[0]
    fields = {"id": "a", "prompt": "p", "query": "q"}
    fields.pop(key, None)
    path.write_text("briefs:\n  - " + "\n    ".join([f"{k}: {v}" for k, v in fields.items()] + [line]) + "\n")
    with pytest.raises(BriefsError) as e:
        load_briefs(path)
    assert str(e.value).startswith(f"{path}: brief ") and message in str(e.value)


def test_a_yaml_number_for_image_size_is_read_as_the_size(tmp_path):
    path = tmp_path / "briefs.yaml"
    path.write_text("briefs:\n  - {id: a, prompt: p, query: q, image_size: 512}\n")
    assert load_briefs(path)[0].image_size == "512"


def test_the_domain_imports_no_dagster():
    """The boundary the project layout promises: the shared domain, every stage's logic (and the search the web
    page answers from) run and are tested without Dagster."""
    import subprocess
    import sys
    from pathlib import Path

    pkg = Path(__file__).parents[1] / "assets_pkg"
    files = [*pkg.glob("domain/**/*.py"), *(p for p in pkg.glob("web/*.py") if p.stem != "server"),
             *(p for p in pkg.glob("stages/*/*.py") if p.stem not in ("asset", "checks", "resource"))]
    modules = sorted(".".join(p.relative_to(pkg.parent).with_suffix("").parts) for p in files
                     if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(modules) == 59 and proc.stdout.strip() == "[]", (modules, proc.stdout)


def test_campaign_index_encodes_only_new_images_and_skips_milvus_when_nothing_changed(tmp_path, tiny_clip):
    from PIL import Image

    from assets_pkg.domain.checkpoints import draw_shape
    from assets_pkg.domain.milvus import campaign_uri
    from assets_pkg.stages.campaign_index.logic import index_campaign_images

    art = DropArtifacts.at(tmp_path / "artifacts", "spring")
    campaign_dir(art).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, colour in (("red-hero", "red"), ("blue-shelf", "blue")):
        draw_shape(colour, "circle", rng).save(campaign_dir(art) / f"{name}.png")
    uri = campaign_uri(str(tmp_path / "milvus.db"))
    assert uri == str(tmp_path / "milvus-campaigns.db")
    model_id = clip_model_id(str(tiny_clip))
    encoder = ClipEncoder(str(tiny_clip), batch_size=4, num_workers=0)

    def run(load=lambda: encoder):
        return index_campaign_images("spring", art, model_id, load,
                                     lambda: ProductImageStore(uri, collection="c_campaigns"), uri, "c_campaigns")

    first = run()
    assert (first.encoded, first.upserted, first.deleted, first.indexed, first.synced) == (2, 2, 0, 2, True)
    again = run(load=_never)  # unchanged: neither the model nor Milvus is touched
    assert (again.encoded, again.indexed, again.synced) == (0, 2, False)

    draw_shape("green", "square", rng).save(campaign_dir(art) / "red-hero.png")  # regenerated
    Image.new("RGB", (8, 8)).save(campaign_dir(art) / "notes.jpg")  # not a campaign PNG
    third = run()
    assert (third.encoded, third.upserted, third.deleted, third.indexed) == (1, 1, 1, 2)
    with ProductImageStore(uri, collection="c_campaigns") as store:
        assert sorted(f.path for f in store.rows_of_drop("spring").values()) == \
            ["campaign/blue-shelf.png", "campaign/red-hero.png"]

    for png in campaign_dir(art).glob("*.png"):
        png.unlink()
    gone = run(load=_never)
    assert (gone.deleted, gone.indexed) == (2, 0)


def test_campaign_index_sends_only_the_rows_it_encoded_when_another_writer_changed_one_meanwhile(tmp_path, tiny_clip):
    """A row the index did not encode is never written by it, even when another writer changed that row
    between the index's read and its write (it would have had no vector to send)."""
    from assets_pkg.domain.checkpoints import draw_shape
    from assets_pkg.domain.store import ImageCollection
    from assets_pkg.stages.campaign_index.logic import index_campaign_images

    art = DropArtifacts.at(tmp_path / "artifacts", "spring")
    campaign_dir(art).mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name, colour in (("red-hero", "red"), ("blue-shelf", "blue")):
        draw_shape(colour, "circle", rng).save(campaign_dir(art) / f"{name}.png")
    uri = str(tmp_path / "milvus-campaigns.db")
    encoder = ClipEncoder(str(tiny_clip), batch_size=4, num_workers=0)

    class MeanwhileAnotherWriter(ImageCollection):
        def changed_rows(self, drop, rows, rewrite_all=False, current=None):
            todo = super().changed_rows(drop, rows, rewrite_all, current)
            if current is None:  # the index asking, before it encodes: another run renames blue-shelf now
                (blue,) = [r for r in rows if r["path"] == "campaign/blue-shelf.png"]
                vector = self.vectors([row_id(drop, blue["sha256"])])[row_id(drop, blue["sha256"])]
                self.upsert_drop(drop, [{**blue, "aliases": ["campaign/blue-shelf-copy.png"], "vector": vector}])
            return todo

    def run(store_class):
        return index_campaign_images("spring", art, clip_model_id(str(tiny_clip)), lambda: encoder,
                                     lambda: store_class(uri, collection="c_campaigns"), uri, "c_campaigns")

    assert run(ImageCollection).encoded == 2
    draw_shape("green", "square", rng).save(campaign_dir(art) / "red-hero.png")  # regenerated
    report = run(MeanwhileAnotherWriter)
    assert (report.encoded, report.upserted, report.deleted, report.indexed) == (1, 1, 1, 2)
    with ImageCollection(uri, collection="c_campaigns") as store:
        ids = sorted(store.ids_of_drop("spring"))
        norms = {i: float(np.linalg.norm(v)) for i, v in store.vectors(ids).items()}
    assert len(norms) == 2 and min(norms.values()) > 0.5, norms  # unit vectors; none written as zeros

"""Domain code without Dagster: briefs, drop scanning, the CLIP encoder and the Milvus store."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from assets_pkg.stages.briefs.logic import load_briefs
from assets_pkg.domain.drops import ProductDrop, discover_drops, validate_drop_name
from assets_pkg.stages.scan.logic import scan_drop
from assets_pkg.domain.encoder import ClipEncoder
from assets_pkg.domain.errors import BriefsError, InvalidDropName, StoreError
from assets_pkg.domain.store import ProductImageStore, drop_filter
from conftest import draw_drop


# -- briefs ------------------------------------------------------------------
def test_briefs_parse_with_defaults(tmp_path):
    f = tmp_path / "briefs.yaml"
    f.write_text("briefs:\n  - id: a\n    prompt: P\n    query: Q\n  - {id: b, prompt: P2, query: Q2, top_k: 5, aspect_ratio: '9:16'}\n")
    a, b = load_briefs(f)
    assert (a.id, a.top_k, a.aspect_ratio) == ("a", 3, None)
    assert (b.id, b.top_k, b.aspect_ratio) == ("b", 5, "9:16")
    assert load_briefs(tmp_path / "missing.yaml") == []


@pytest.mark.parametrize(
    "body, message",
    [
        ("briefs: [", "not valid YAML"),
        ("- a\n- b\n", "expected a top-level 'briefs:' list"),
        ("briefs:\n  - id: a\n    query: q\n", "brief 'a': 'prompt' is missing or empty"),
        ("briefs:\n  - {id: a, prompt: p, query: q, top_k: -1}\n", "brief 'a': top_k must be an integer from 1 to 100"),
        ("briefs:\n  - {id: a, prompt: p, query: q, colour: red}\n", "brief 'a': unknown key(s) colour"),
        ("briefs:\n  - {id: a, prompt: p, query: q, aspect_ratio: '7:3'}\n", "aspect_ratio '7:3' is not one of"),
        ("briefs:\n  - {id: a, prompt: p, query: q}\n  - {id: a, prompt: p, query: q}\n", "brief 'a' appears twice"),
        ("briefs:\n  - {id: 'a b', prompt: p, query: q}\n", "id must be 1-64 letters"),
    ],
)
def test_bad_briefs_name_file_and_brief(tmp_path, body, message):
    f = tmp_path / "briefs.yaml"
    f.write_text(body)
    with pytest.raises(BriefsError) as e:
        load_briefs(f)
    assert str(f) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


# -- drops -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["spring-2026", "SS26_drop", "a"])
def test_valid_drop_names(name):
    assert validate_drop_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "a/b", 'x" or drop != "', "with space", "-lead", "é", "a" * 65])
def test_invalid_drop_names_are_refused(name):
    with pytest.raises(InvalidDropName):
        validate_drop_name(name)


def test_scan_lists_valid_images_and_rejects_bad_files(tmp_path):
    folder = tmp_path / "d"
    names = draw_drop(folder, spec=[("red", "circle", 2)])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    data = (folder / names[0]).read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "readme.txt").write_text("skipped silently")
    (folder / ".hidden.png").write_bytes(data)
    sub = folder / "Sub Folder"
    sub.mkdir()
    (sub / "COPY (1).PNG").write_bytes(data)

    m = scan_drop(ProductDrop("d", folder))
    assert list(m.images["path"]) == ["Sub Folder/COPY (1).PNG", *names]
    assert {r["file"]: r["reason"].split(":")[0] for r in m.rejected} == {
        "empty.png": "empty file", "notes.jpg": "not an image", "truncated.png": "cannot decode",
    }
    unique = m.unique_images
    assert len(unique) == 2  # the copy has the same bytes as red_circle_0.png
    row = unique[unique["path"] == "Sub Folder/COPY (1).PNG"].iloc[0]
    assert row["aliases"] == ["red_circle_0.png"]
    with Image.open(folder / names[1]) as im:
        assert tuple(m.images.iloc[2][["width", "height"]]) == im.size


def test_rescan_reuses_rows_of_unchanged_files(tmp_path):
    folder = tmp_path / "d"
    draw_drop(folder, spec=[("red", "circle", 2)])
    first = scan_drop(ProductDrop("d", folder))
    (folder / "red_circle_0.png").write_bytes(b"garbage")  # changed content must be noticed
    second = scan_drop(ProductDrop("d", folder), previous=first.images)
    assert list(second.images["path"]) == ["red_circle_1.png"]
    assert [r["file"] for r in second.rejected] == ["red_circle_0.png"]


def test_discover_drops_skips_files_and_lists_bad_names(tmp_path):
    for n in ("b-drop", "a_drop", "bad name", ".hidden"):
        (tmp_path / n).mkdir()
    (tmp_path / "README.md").write_text("x")
    listing = discover_drops(tmp_path)
    assert [d.name for d in listing.drops] == ["a_drop", "b-drop"]
    assert listing.invalid == ["bad name"]


# -- encoder -----------------------------------------------------------------
def test_encoder_outputs_unit_float32_and_keeps_input_order(tmp_path, tiny_clip):
    folder = tmp_path / "d"
    names = draw_drop(folder, spec=[("red", "circle", 3), ("blue", "square", 3)])
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    enc = ClipEncoder(str(tiny_clip), batch_size=4, num_workers=2)
    paths = [folder / n for n in names[:3]] + [folder / "broken.png"] + [folder / n for n in names[3:]]
    out = enc.embed_images(paths)
    assert out.vectors.dtype == np.float32 and out.vectors.shape == (6, 64)
    assert sorted(out.indices) == [0, 1, 2, 4, 5, 6]
    assert [i for i, _ in out.failures] == [3] and "cannot decode" in out.failures[0][1]
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-5)
    # The same picture gives the same vector whatever its batch.
    single = enc.embed_images([paths[5]]).vectors[0]
    np.testing.assert_allclose(single, out.vectors[out.indices.index(5)], atol=1e-5)
    text = enc.embed_texts(["a red circle", "a blue square"])
    sims = out.vectors @ text.T
    order = [out.indices[k] for k in np.argsort(-sims[:, 0])]
    assert set(order[:3]) == {0, 1, 2}


def test_trimmed_text_encoding_equals_clips_full_context(vit_b32_shaped):
    import clip
    import torch

    enc = ClipEncoder(str(vit_b32_shaped), device="cpu")
    texts = ["a red circle", "a much longer product description with several more words in it"]
    with torch.inference_mode():
        full = enc.model.encode_text(clip.tokenize(texts)).float()
    full = (full / full.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(enc.embed_texts(texts), full, atol=1e-5)


def test_long_queries_are_truncated_not_fatal(tiny_clip):
    enc = ClipEncoder(str(tiny_clip))
    v = enc.embed_texts(["a red circle " * 100])
    assert v.shape == (1, 64)


def test_letterbox_keeps_the_whole_product():
    from assets_pkg.domain.encoder import pad_to_square

    img = Image.new("RGB", (300, 100), "red")
    sq = pad_to_square(img)
    assert sq.size == (300, 300)
    assert sq.getpixel((150, 150)) == (255, 0, 0) and sq.getpixel((150, 10)) == (255, 255, 255)


# -- store -------------------------------------------------------------------
def _rows(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [
        {"sha256": f"{i:064x}", "path": f"img_{i}.png", "aliases": [], "width": 10, "height": 10, "vector": vecs[i]}
        for i in range(n)
    ]


def test_upsert_is_idempotent_and_delete_is_exact(tmp_path):
    rows = _rows(5)
    with ProductImageStore(str(tmp_path / "m.db"), collection="t") as store:
        store.ensure_collection(8)
        assert store.upsert_drop("d1", rows) == 5
        assert store.upsert_drop("d1", rows) == 5
        store.upsert_drop("d2", rows[:2])
        assert (store.count("d1"), store.count("d2"), store.count()) == (5, 2, 7)
        store.delete_ids("d1", [f"d1/{rows[0]['sha256']}"])
        assert store.count("d1") == 4 and store.count("d2") == 2
        hit = store.search(rows[1]["vector"], drop="d1", top_k=1)[0][0]
        assert (hit.path, hit.drop) == ("img_1.png", "d1") and hit.score == pytest.approx(1.0, abs=1e-5)
    # Reopening a Lite file needs load_collection; the store does it.
    with ProductImageStore(str(tmp_path / "m.db"), collection="t") as store:
        assert store.count("d1") == 4
        with pytest.raises(StoreError, match="needs dim 16; set MILVUS_COLLECTION"):
            store.ensure_collection(16)


def test_a_milvus_lite_3_folder_is_refused_with_the_way_out(tmp_path):
    (tmp_path / "milvus.db" / "collections").mkdir(parents=True)
    with pytest.raises(StoreError, match=r"DROP_STUDIO_MILVUS_URI=.*milvus.db is a folder.*Delete the folder and run again"):
        ProductImageStore(str(tmp_path / "milvus.db")).open()


def test_filters_are_built_only_from_valid_names():
    assert drop_filter("spring") == 'drop == "spring"'
    with pytest.raises(InvalidDropName):
        drop_filter('x" or drop != "')

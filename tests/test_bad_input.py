"""Messy product folders and operator typos: every file indexed or rejected with a reason, nothing lost,
nothing let in. The corpus is generated here, not committed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from assets_pkg.domain.drops import DROP_NAME_RE, ProductDrop, load_rgb, validate_drop_name
from assets_pkg.stages.scan.logic import scan_drop
from assets_pkg.domain.errors import InvalidDropName, StoreError
from assets_pkg.domain.store import ProductImageStore, checked_ids, drop_filter, row_id
from conftest import ROOT, draw_drop, forked_cli

RED, BLUE = (220, 30, 30), (30, 70, 220)


def _exif_rotated_jpeg(path: Path) -> None:
    """Stored 120x60 (red left half, blue right half) with orientation 6: shown 60x120, red on top."""
    img = Image.new("RGB", (120, 60), BLUE)
    img.paste(Image.new("RGB", (60, 60), RED), (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif, quality=95)


def make_corpus(folder: Path, outside: Path) -> dict:
    """Every kind of messy file a product archive holds; returns what must be indexed and what must be rejected."""
    folder.mkdir(parents=True)
    base = Image.new("RGB", (64, 48), RED)
    good = {
        "photo.jpg": lambda p: base.save(p, "JPEG"),
        "UPPER.JPG": lambda p: base.save(p, "JPEG", quality=70),
        "web.webp": lambda p: base.save(p, "WEBP"),
        "scan.bmp": lambda p: base.save(p, "BMP"),
        "print.tiff": lambda p: base.save(p, "TIFF"),
        "cmyk.jpg": lambda p: base.convert("CMYK").save(p, "JPEG"),
        "gray.png": lambda p: base.convert("L").save(p),
        "deep16.png": lambda p: Image.fromarray(np.full((48, 64), 32768, np.uint16)).save(p),
        "rotated.jpg": _exif_rotated_jpeg,
        'quote\'s "café" (1).png': lambda p: base.save(p),
        "sub dir/nested.png": lambda p: Image.new("RGB", (50, 50), BLUE).save(p),
    }
    for name, write in good.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write(folder / name)
    # Palette image whose transparent background must become white, not black.
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 0, 220, 30, 30] + [0] * 762)
    pal.paste(1, (10, 10, 30, 30))
    pal.save(folder / "palette.png", transparency=0)
    good["palette.png"] = None
    # Animated GIF: only the first (red) frame counts.
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, BLUE)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    good["anim.gif"] = None
    # The same bytes under a second name: one row, both names.
    (folder / "photo copy.jpg").write_bytes((folder / "photo.jpg").read_bytes())
    good["photo copy.jpg"] = None

    jpeg = (folder / "photo.jpg").read_bytes()
    rejected = {
        "empty.png": "empty file",
        "truncated.jpg": "cannot decode",
        "not-an-image.png": "not an image",
        "huge.png": "pixels is over the limit",
        "dangling.png": "unreadable",
        "escape.png": "symbolic link leaves the drop folder",
        "fifo.png": "not a regular file",
    }
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "not-an-image.png").write_text("<html>oops</html>")
    Image.new("RGB", (2000, 1000), BLUE).save(folder / "huge.png")  # over a 1,000,000-pixel limit
    os.symlink(folder / "missing.png", folder / "dangling.png")
    outside.mkdir(parents=True, exist_ok=True)
    base.save(outside / "secret.png")
    os.symlink(outside / "secret.png", folder / "escape.png")
    os.mkfifo(folder / "fifo.png")
    # Skipped silently: hidden files and non-image files.
    (folder / ".DS_Store").write_bytes(b"\0\1")
    base.save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image file")
    (folder / "briefs.yaml").write_text("briefs: []\n")
    return {"good": sorted(good), "rejected": rejected}


@pytest.fixture
def corpus(studio, monkeypatch):
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "1000000")
    return make_corpus(studio.drops / "messy", studio.root / "outside")


def test_every_file_is_indexed_or_rejected_with_a_reason(studio, corpus):
    (summary,) = studio.run_json("--drop", "messy", extra_env={"MAX_IMAGE_PIXELS": "1000000"})
    assert summary["ok"], summary["error"]
    reasons = {r["file"]: r["reason"] for r in summary["rejected"]}
    assert sorted(reasons) == sorted(corpus["rejected"])
    for name, expected in corpus["rejected"].items():
        assert expected in reasons[name], (name, reasons[name])
    assert summary["images"] == len(corpus["good"]) + len(corpus["rejected"])  # 14 valid files + 7 rejected
    assert summary["indexed"] == summary["distinct"] == len(corpus["good"]) - 1  # the copy shares a row

    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        rows = store.rows_of_drop("messy")
    names = sorted(n for f in rows.values() for n in (f.path, *f.aliases))
    assert names == corpus["good"]


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """The messy files alone, for tests of reading and scanning (no model, no Milvus)."""
    make_corpus(tmp_path / "messy", tmp_path / "outside")
    return tmp_path / "messy"


def test_images_look_as_a_person_sees_them(messy_folder):
    folder = messy_folder
    rotated = load_rgb(folder / "rotated.jpg")
    assert rotated.size == (60, 120)
    assert rotated.getpixel((30, 10))[0] > 180 and rotated.getpixel((30, 110))[2] > 180  # red on top
    assert load_rgb(folder / "cmyk.jpg").getpixel((5, 5))[0] > 180
    assert load_rgb(folder / "palette.png").getpixel((2, 2)) == (255, 255, 255)  # transparent -> white
    assert load_rgb(folder / "palette.png").getpixel((20, 20)) == RED
    assert load_rgb(folder / "anim.gif").getpixel((5, 5)) == RED  # first frame
    assert 120 <= load_rgb(folder / "deep16.png").getpixel((5, 5))[0] <= 136  # 16-bit mid-grey stays mid-grey
    m = scan_drop(ProductDrop("messy", folder), max_pixels=1_000_000)
    assert m.images.set_index("path").at["rotated.jpg", "format"] == "JPEG"


def test_unchanged_rescan_keeps_every_rejection(messy_folder):
    drop = ProductDrop("messy", messy_folder)
    first = scan_drop(drop, max_pixels=1_000_000)
    second = scan_drop(drop, previous=first.images, max_pixels=1_000_000)
    assert second.rejected == first.rejected and second.images.equals(first.images)


# -- names, filters and queries ---------------------------------------------------------
@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_text_is_either_a_safe_drop_name_or_refused(text):
    try:
        name = validate_drop_name(text)
    except InvalidDropName as e:
        assert "invalid drop name" in str(e)
        return
    assert DROP_NAME_RE.fullmatch(name) and ".." not in name and "/" not in name


@given(st.from_regex(DROP_NAME_RE, fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_filters_and_deletes_from_valid_names_cannot_change_meaning(name):
    expr = drop_filter(name)
    assert expr.startswith("drop == ") and json.loads(expr[len("drop == "):]) == name
    ids = [row_id(name, "a" * 64)]
    assert checked_ids(name, ids) == ids


@given(st.text(min_size=1, max_size=40).filter(lambda t: not DROP_NAME_RE.fullmatch(t)))
@settings(max_examples=200, deadline=None)
def test_filters_and_deletes_refuse_other_names_and_ids(text):
    with pytest.raises(InvalidDropName):
        drop_filter(text)
    with pytest.raises(StoreError, match="refusing to delete"):  # deletes touch only ids of the named drop
        checked_ids("ok", [text])
    with pytest.raises(StoreError, match="not a row id of drop 'ok'"):
        checked_ids("ok", [row_id("other", "a" * 64)])


def test_search_arguments_are_checked_before_anything_runs(studio):
    for args, needle in [
        (["search", "red", "--top-k", "10000"], "Invalid value for '--top-k': 10000 is not in the range 1<=x<=100"),
        (["search", ""], "the search query is empty"),
        (["search", "red", "--drop", 'x" or drop != "'], "invalid drop name"),
    ]:
        proc = studio.cli(*args, check=False)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


# -- crashes and concurrent runs -------------------------------------------------------
@pytest.mark.slow
def test_a_killed_run_keeps_finished_batches_and_the_rerun_ends_exact(studio):
    draw_drop(studio.drops / "big", spec=[(c, s, 12) for c in ("red", "blue") for s in ("circle", "square")])
    env = {**os.environ, **studio.env, "CLIP_BATCH_SIZE": "4"}
    partial = studio.artifacts / "big" / "embeddings.partial"
    proc = subprocess.Popen([sys.executable, "-m", "assets_pkg.cli", "run", "--drop", "big"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (partial.exists() and len(list(partial.glob("*.parquet"))) >= 3):
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = 4 * len(list(partial.glob("*.parquet")))

    (summary,) = studio.run_json("--drop", "big", extra_env={"CLIP_BATCH_SIZE": "4"})
    assert summary["ok"]
    assert summary["reused"] >= finished and summary["encoded"] + summary["reused"] == 48
    assert summary["encoded"] <= 48 - finished
    assert summary["indexed"] == 48 and summary["checks"]["collection_matches_manifest"]
    assert not partial.exists()


def test_two_runs_of_the_same_drop_at_once_leave_exact_rows(studio):
    draw_drop(studio.drops / "spring", spec=[(c, "circle", 6) for c in ("red", "blue", "green")])
    procs = forked_cli().run_at_once([["run", "--drop", "spring", "--json"]] * 2, {**os.environ, **studio.env},
                                     timeout=300)
    assert all(p.returncode == 0 for p in procs), [p.stderr[-500:] for p in procs]
    assert [json.loads(p.stdout)[0]["indexed"] for p in procs] == [18, 18]
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        ids = store.ids_of_drop("spring")
        assert store.count("spring") == len(ids) == 18
    m = scan_drop(ProductDrop("spring", studio.drops / "spring"))
    assert ids == {row_id("spring", h) for h in m.images["sha256"]}


def test_a_file_that_is_not_milvus_lite_is_one_line_and_is_left_as_it_was(tmp_path):
    """Milvus Lite's server dies at once on it: noticed as it starts (not taken for a server still starting)."""
    uri = tmp_path / "milvus.db"
    uri.write_bytes(b"a spreadsheet saved under the wrong name " * 50)
    with pytest.raises(StoreError) as e:
        ProductImageStore(str(uri)).open()
    assert str(e.value).startswith(f"DROP_STUDIO_MILVUS_URI={uri}: Milvus Lite file cannot be opened")
    assert "\n" not in str(e.value) and uri.read_bytes() == b"a spreadsheet saved under the wrong name " * 50

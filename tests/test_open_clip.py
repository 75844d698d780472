"""open_clip models beside OpenAI's CLIP: no weights can be downloaded here, so each architecture is built with
random weights (`pretrained=None`), saved to a file, and loaded the way a user's downloaded weights in a file are
(`CLIP_MODEL=open_clip:<architecture>:<file>`)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import BRIEFS, draw_drop, materialize_drop, metadata


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from assets_pkg.domain.checkpoints import write_open_clip_weights

    folder = tmp_path_factory.mktemp("open_clip")
    return {arch: write_open_clip_weights(folder / f"{arch}.pt", arch) for arch in ("ViT-S-32", "MobileCLIP-S1")}


def test_an_open_clip_model_in_a_file_embeds_with_its_own_preprocessing(weights, tmp_path):
    import open_clip

    from assets_pkg.domain.encoder import ClipEncoder, pad_to_square

    img = Image.new("RGB", (640, 400), (30, 30, 30))
    img.paste((220, 40, 40), (200, 100, 440, 300))
    img.save(tmp_path / "photo.jpg", quality=95)
    encoder = ClipEncoder(f"open_clip:MobileCLIP-S1:{weights['MobileCLIP-S1']}")
    assert (encoder.dim, encoder.resolution) == (512, 256)
    assert encoder.model_id.startswith("open_clip:MobileCLIP-S1:MobileCLIP-S1.pt@")
    batch = encoder.embed_images([tmp_path / "photo.jpg"])
    assert batch.vectors.shape == (1, 512) and batch.failures == []
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)

    # The same vector as open_clip itself gives, from its own transforms (256 px) on the letterboxed photo.
    model, _, preprocess = open_clip.create_model_and_transforms("MobileCLIP-S1", pretrained=str(weights["MobileCLIP-S1"]))
    pixels = preprocess(pad_to_square(Image.open(tmp_path / "photo.jpg").convert("RGB")))
    assert pixels.shape == (3, 256, 256)
    with torch.inference_mode():
        expected = model.eval().encode_image(pixels[None]).float()
    expected = (expected / expected.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(batch.vectors, expected, atol=2e-3)

    texts = encoder.embed_texts(["a red bag", "eine rote Tasche"])
    assert texts.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_a_drop_runs_end_to_end_on_an_open_clip_model(studio, weights, monkeypatch):
    model = f"open_clip:ViT-S-32:{weights['ViT-S-32']}"
    monkeypatch.setenv("CLIP_MODEL", model)
    names = draw_drop(studio.drops / "spring", briefs=BRIEFS)
    result = materialize_drop("spring")
    assert result.success
    emb = metadata(result, "clip_embeddings")
    assert (emb["encoded"], emb["dim"]) == (len(names), 384)
    vectors = np.asarray(pq.read_table(studio.artifacts / "spring" / "embeddings.parquet").column("vector").to_pylist())
    assert vectors.shape == (len(names), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert json.loads((studio.artifacts / "spring" / "embeddings.json").read_text())["model_id"].startswith(
        "open_clip:ViT-S-32:ViT-S-32.pt@")
    assert metadata(result, "product_image_collection")["indexed"] == len(names)
    hits = json.loads(studio.cli("search", "a red circle", "--drop", "spring", "--json",
                                 extra_env={"CLIP_MODEL": model}).stdout)
    assert len(hits) == 10 and all(h["drop"] == "spring" for h in hits)
    # CLIP_MODEL back at the tiny 64-d model: search still answers from the model the collection was built
    # with (search moves to another model only once every drop is built for it).
    again = json.loads(studio.cli("search", "a red circle", "--drop", "spring", "--json").stdout)
    assert again == hits


@pytest.mark.parametrize("model, error", [
    ("open_clip:ViT-B-32", "CLIP_MODEL='open_clip:ViT-B-32': write open_clip:<architecture>:<pretrained tag>"),
    ("open_clip:No-Such-Arch:x.pt", "CLIP_MODEL='open_clip:No-Such-Arch:x.pt': no such weights file 'x.pt'"),
    ("open_clip:No-Such-Arch:laion2b", "CLIP_MODEL='open_clip:No-Such-Arch:laion2b': open_clip has no architecture "
                                      "'No-Such-Arch'"),
    ("open_clip:ViT-S-32:laion2b_s34b_b79k", "CLIP_MODEL='open_clip:ViT-S-32:laion2b_s34b_b79k': the weights are not "
                                             "in open_clip's cache and could not be downloaded"),
])
def test_a_wrong_open_clip_model_is_one_clear_line(model, error, monkeypatch):
    from assets_pkg.domain.encoder import ClipEncoder
    from assets_pkg.domain.errors import EncoderError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without internet
    with pytest.raises(EncoderError) as e:
        ClipEncoder(model)
    assert str(e.value).startswith(error) and "\n" not in str(e.value)

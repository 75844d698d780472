"""The real ViT-B/32 architecture end to end on CPU, with randomly initialised weights of the exact shapes
(the official weights cannot be downloaded here; with them, only CLIP_MODEL changes)."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow.parquet as pq

from assets_pkg.domain.encoder import ClipEncoder
from conftest import BRIEFS, draw_drop, materialize_drop, metadata


def test_vit_b32_shaped_weights_load_like_the_official_ones(vit_b32_shaped):
    enc = ClipEncoder(str(vit_b32_shaped), device="cpu")
    assert enc.dim == 512
    assert enc.model.visual.input_resolution == 224
    assert enc.model.visual.conv1.weight.shape == (768, 3, 32, 32)
    assert enc.dtype.is_floating_point and str(enc.dtype) == "torch.float32"  # fp16 checkpoint, fp32 on CPU
    # Built without torch's random initialisation, then loaded: exactly the model clip.load itself gives.
    import clip
    import torch

    assert torch.nn.init.normal_.__module__ == "torch.nn.init"  # initialisation is back for every other module
    with warnings.catch_warnings():  # clip tries the file as a TorchScript archive first
        warnings.simplefilter("ignore")
        reference, _ = clip.load(str(vit_b32_shaped), device="cpu", jit=False)
    tokens = clip.tokenize(["a red circle", "a blue square"])
    with torch.inference_mode():
        expected = reference.eval().encode_text(tokens).float()
        pixels = torch.linspace(-1, 1, 3 * 224 * 224).reshape(1, 3, 224, 224)
        expected_image = reference.encode_image(pixels).float()
        assert torch.equal(enc.model.encode_text(tokens).float(), expected)
        assert torch.equal(enc.model.encode_image(pixels.to(enc.dtype)).float(), expected_image)


def test_drop_runs_end_to_end_with_vit_b32_shapes_on_cpu(studio, vit_b32_shaped, monkeypatch):
    monkeypatch.setenv("CLIP_MODEL", str(vit_b32_shaped))
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 3), ("blue", "square", 3)], briefs=BRIEFS)
    result = materialize_drop("spring")
    assert result.success
    emb = metadata(result, "clip_embeddings")
    assert (emb["dim"], emb["device"], emb["encoded"]) == (512, "cpu", 6)
    vectors = np.asarray(pq.read_table(studio.artifacts / "spring" / "embeddings.parquet")
                         .column("vector").to_pylist(), dtype=np.float32)
    assert vectors.shape == (6, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert metadata(result, "product_image_collection")["indexed"] == 6
    assert metadata(result, "reference_images")["references"] == 2 + 3
    assert metadata(result, "campaign_images")["generated"] == 2

"""Embedding throughput on the same images, in one process:

1. seed_loop_ips: the reference notebook's way, one image at a time
   (`preprocess(Image.open(p)).unsqueeze(0)`, `encode_image`, normalise, `.tolist()`);
2. pipeline_ips: Drop Studio's pipeline end to end (files in, unit float32 vectors out);
3. forward_ips: the model forward alone on already preprocessed tensors at the pipeline's
   batch size: the ceiling for the pipeline.

2 and 3 alternate for `--rounds` rounds; the medians are reported, and the ratio is the median of the
rounds' own ratios.

    python benchmarks/embed_throughput.py --images /tmp/bench-images --model data/models/vit-b-32-shaped.pt --json
"""

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from PIL import Image

from assets_pkg.domain.drops import IMAGE_EXTENSIONS
from assets_pkg.domain.encoder import ClipEncoder
from report import print_result

warnings.filterwarnings("ignore")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seed_loop(model, preprocess, device, paths) -> float:
    start = time.perf_counter()
    for p in paths:
        image = preprocess(Image.open(p)).unsqueeze(0).to(device)
        if device.startswith("cuda"):
            image = image.half()
        with torch.no_grad():
            feats = model.encode_image(image)
            feats /= feats.norm(dim=-1, keepdim=True)
        feats.squeeze().cpu().tolist()
    return len(paths) / (time.perf_counter() - start)


def forward_only(encoder: ClipEncoder, paths, repeats: int) -> float:
    batch = torch.stack([encoder.preprocess(Image.open(p).convert("RGB")) for p in paths[: encoder.batch_size]])
    if encoder.device.startswith("cuda"):
        batch = batch.pin_memory()
    encoder._encode_pixels(batch)  # warm-up
    _sync(encoder.device)
    start = time.perf_counter()
    for _ in range(repeats):
        encoder._encode_pixels(batch)
    _sync(encoder.device)
    return repeats * len(batch) / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--limit", type=int, default=0, help="use at most this many images")
    p.add_argument("--seed-limit", type=int, default=128, help="images for the (slow) seed loop")
    p.add_argument("--rounds", type=int, default=3, help="pipeline and forward measured alternately, this often")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    paths = sorted(q for q in Path(a.images).rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
    if a.limit:
        paths = paths[: a.limit]
    if not paths:
        sys.exit(f"no images under {a.images}")
    encoder = ClipEncoder(a.model, a.device, a.batch_size, a.workers)
    model, preprocess = encoder.model, encoder.preprocess  # loaded once, shared by all three

    seed_paths = paths[: a.seed_limit]
    seed_loop(model, preprocess, encoder.device, seed_paths[:4])  # warm-up
    seed_ips = seed_loop(model, preprocess, encoder.device, seed_paths)

    encoder.embed_images(paths[: encoder.batch_size])  # warm-up (workers, allocator)
    # Pipeline and forward alternate, round after round: a shared machine's speed drifts by more than the
    # difference measured, so each round's ratio compares two runs made under the same conditions.
    rounds = []
    for _ in range(a.rounds):
        _sync(encoder.device)
        start = time.perf_counter()
        out = encoder.embed_images(paths)
        _sync(encoder.device)
        pipe = len(out.indices) / (time.perf_counter() - start)
        fwd = forward_only(encoder, paths, repeats=max(2, min(20, len(paths) // encoder.batch_size)))
        rounds.append((pipe, fwd))
    pipeline_ips, fwd_ips = (statistics.median(r[k] for r in rounds) for k in (0, 1))
    ratio = statistics.median(pipe / fwd for pipe, fwd in rounds)

    result = {
        "device": encoder.device if encoder.device == "cpu" else torch.cuda.get_device_name(),
        "model": encoder.model_id,
        "images": len(paths),
        "seed_images": len(seed_paths),
        "batch_size": encoder.batch_size,
        "workers": encoder.num_workers,
        "torch_threads": torch.get_num_threads(),
        "seed_loop_ips": round(seed_ips, 1),
        "pipeline_ips": round(pipeline_ips, 1),
        "forward_ips": round(fwd_ips, 1),
        "rounds": a.rounds,
        "pipeline_vs_forward": round(ratio, 3),  # the median of the rounds' ratios
        "pipeline_vs_forward_each": [round(pipe / fwd, 3) for pipe, fwd in rounds],
        "pipeline_vs_seed": round(pipeline_ips / seed_ips, 2),
    }
    print_result(result, a.json)


if __name__ == "__main__":
    main()

"""Local CLIP checkpoints for machines without internet.

`clip.load(path)` rebuilds the architecture from a state dict's shapes, so a
checkpoint written here loads through exactly the same call as the official
ViT-B/32 weights:

- `tiny`: a small CLIP trained in seconds on generated pictures of coloured
  shapes with captions ("a red circle"); it really ranks red circles first for
  "a red circle", which makes retrieval testable without downloaded weights.
- `vit-b-32`: randomly initialised weights with the exact ViT-B/32 shapes, for
  measuring speed and memory of the real architecture.

    drop-studio make-checkpoint --out data/models/tiny-clip.pt [--arch vit-b-32]
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import clip
    from clip.clip import _transform
    from clip.model import CLIP

from .encoder import pad_to_square
from .errors import StudioError

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 50, 180),
    "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
CAPTION_TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "{c} {s}", "a product shot of a {c} {s}")

TINY_STEPS = 600  # enough for the tiny model to tell the shapes and colours apart
ARCHS = {
    # embed_dim, image_resolution, vision_layers, vision_width, patch, context, vocab, text width, heads, text layers
    "tiny": dict(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=8,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2),
    "vit-b-32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                     transformer_layers=12),
}


def draw_shape(color: str, shape: str, rng: np.random.Generator, size: tuple[int, int] | None = None) -> Image.Image:
    """A picture of one coloured shape at a random place and scale on a light background."""
    if size is None:
        side = int(rng.integers(96, 200))
        size = (side, int(side * rng.uniform(0.75, 1.33)))
    w, h = size
    bg = tuple(int(v) for v in rng.integers(225, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    side = min(w, h)
    r = side * rng.uniform(0.28, 0.45)
    cx = rng.uniform(r, w - r)
    cy = rng.uniform(r, h - r)
    fill = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in COLORS[color])
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        d.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return img


def _labels():
    return [(c, s) for c in COLORS for s in SHAPES]


def build_untrained(arch: str) -> CLIP:
    return CLIP(**ARCHS[arch])


def train_tiny(steps: int = TINY_STEPS, seed: int = 0, log=print) -> CLIP:
    """Contrastive training where each batch holds every (colour, shape) class once."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_untrained("tiny").float().train()
    preprocess = _transform(model.visual.input_resolution)
    labels = _labels()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    start = time.perf_counter()
    for step in range(steps):
        images = torch.stack([preprocess(pad_to_square(draw_shape(c, s, rng))) for c, s in labels])
        captions = [CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))].format(c=c, s=s) for c, s in labels]
        tokens = clip.tokenize(captions)
        logits_per_image, logits_per_text = model(images, tokens)
        target = torch.arange(len(labels))
        loss = (F.cross_entropy(logits_per_image, target) + F.cross_entropy(logits_per_text, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % 100 == 0 or step == steps - 1):
            log(f"step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - start:.1f}s)")
    return model.eval()


@torch.inference_mode()
def retrieval_accuracy(model: CLIP, samples_per_class: int = 3, seed: int = 123) -> float:
    """Share of fresh pictures whose best-matching caption names their colour and shape."""
    rng = np.random.default_rng(seed)
    preprocess = _transform(model.visual.input_resolution)
    labels = _labels()
    text = model.encode_text(clip.tokenize([f"a {c} {s}" for c, s in labels])).float()
    text = text / text.norm(dim=-1, keepdim=True)
    hits = total = 0
    for k, (c, s) in enumerate(labels):
        imgs = torch.stack([preprocess(pad_to_square(draw_shape(c, s, rng))) for _ in range(samples_per_class)])
        feats = model.encode_image(imgs.to(model.dtype)).float()
        feats = feats / feats.norm(dim=-1, keepdim=True)
        hits += int((feats @ text.T).argmax(dim=1).eq(k).sum())
        total += samples_per_class
    return hits / total


def write_open_clip_weights(out: str | Path, arch: str, seed: int = 0) -> Path:
    """An open_clip architecture with random weights (`pretrained=None`), saved as a state dict: the file
    `CLIP_MODEL=open_clip:<arch>:<out>` loads the way downloaded weights in a file load (no weights can be
    downloaded on an offline machine; this gives each architecture's exact shapes)."""
    import open_clip

    if arch not in open_clip.list_models():
        raise StudioError(f"--arch open_clip:{arch}: open_clip has no such architecture")
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out)
    return out


def write_checkpoint(out: str | Path, arch: str = "tiny", steps: int | None = None, seed: int = 0, log=print) -> Path:
    """`arch`: one of ARCHS, or `open_clip:<architecture>` (random weights); `steps`: training steps of the
    tiny model (default TINY_STEPS)."""
    if arch.startswith("open_clip:"):
        return write_open_clip_weights(out, arch[len("open_clip:"):], seed)
    if arch not in ARCHS:
        raise StudioError(f"--arch {arch!r}: use one of {', '.join(ARCHS)}, or open_clip:<architecture>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if arch == "tiny":
        model = train_tiny(steps=steps or TINY_STEPS, seed=seed, log=log)
        if log:
            log(f"retrieval accuracy on fresh pictures: {retrieval_accuracy(model):.0%}")
    else:
        torch.manual_seed(seed)
        model = build_untrained(arch)
    # fp16 like the official checkpoints; clip.load casts back to fp32 on CPU.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out)
    return out

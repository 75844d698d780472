"""Write N photo-like product images (JPEG, noisy background, one coloured shape) for benchmarks.

    python benchmarks/make_images.py --out /tmp/bench-images --count 512 --size 1200x900
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from assets_pkg.domain.checkpoints import COLORS, SHAPES, draw_shape


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=512)
    p.add_argument("--size", default="1200x900", help="WxH of each image")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    w, h = (int(v) for v in a.size.split("x"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    colours = list(COLORS)
    for i in range(a.count):
        img = draw_shape(colours[i % len(colours)], SHAPES[(i // len(colours)) % len(SHAPES)], rng, size=(w, h))
        noise = rng.normal(0, 12, (h, w, 3))  # photo-like entropy, so JPEG decoding costs what it does on photos
        arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(out / f"product_{i:05d}.jpg", quality=90)
    print(f"wrote {a.count} images of {w}x{h} to {out}")


if __name__ == "__main__":
    main()

"""Cutting, encoding, writing XMP and signing one rendition: approved images into channels.

    python benchmarks/renditions.py [--images 100 --channels meta-feed,meta-story,pmax-landscape,merchant]

Makes --images photo-like PNGs at the pixels the image model answers with for each channel's request
(domain/channels.requests_for: 4:5 at 2K for meta-feed, and so on), two reference pictures per image, a
test certificate authority and a brand certificate (tests/signing.py), then times make_rendition for every
image and channel: scale and crop, JPEG under the limit, XMP, and the C2PA signature. Reports the median
and p95 per rendition, signed and unsigned, and apart the decoding of the source PNG (once per source,
shared by the channels cut from it; these noisy synthetic PNGs decode slower than a model's output).
"""

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from report import print_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from signing import make_signing_files  # noqa: E402

from assets_pkg.domain.channels import CHANNELS, nearest_ratio, requests_for  # noqa: E402
from assets_pkg.domain.image_models import ASPECT_RATIOS, IMAGE_SIZES, output_size  # noqa: E402
from assets_pkg.stages.selects.provenance import BrandSigner, Provenance  # noqa: E402
from assets_pkg.stages.selects.publishing import Source, make_rendition  # noqa: E402


def photo(size: tuple[int, int], rng) -> bytes:
    w, h = size
    base = np.linspace(40, 220, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
    arr = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--channels", default="meta-feed,meta-story,pmax-landscape,merchant")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    channels = [CHANNELS[c] for c in a.channels.split(",")]
    plan = requests_for(channels, ASPECT_RATIOS, IMAGE_SIZES)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="renditions-") as tmp:
        keys = make_signing_files(Path(tmp))
        signer = BrandSigner.load(str(keys["chain"]), str(keys["key"]))
        refs = {f"ref{k}": photo((400, 400), rng) for k in range(2)}
        import hashlib

        ingredients = [{"title": n, "sha256": hashlib.sha256(d).hexdigest(), "path": n, "relationship": "inputTo"}
                       for n, d in refs.items()]
        by_sha = {i["sha256"]: refs[i["path"]] for i in ingredients}
        timings = {"signed": [], "unsigned": [], "decode": []}
        sizes = []
        for i in range(a.images):
            sources = {r: photo(output_size(r, s), rng) for r, s in plan.items()}
            for channel in channels:
                ratio = nearest_ratio(channel, tuple(plan))
                source = Source(f"campaign/img{i}.png", channel.ratio, sources[ratio])
                start = time.perf_counter()
                source.image  # reading the approved PNG: once per source, shared by the channels cut from it
                timings["decode"].append(time.perf_counter() - start)
                facts = Provenance(f"bench img{i} ({channel.name})", "bench", "a product on a beach", ["SKU-1"],
                                   "gemini-3.1-flash-image", False, channel.name, "Ada", "2026-12-03T00:00:00Z",
                                   ingredients)
                for kind, who in (("signed", signer), ("unsigned", None)):
                    start = time.perf_counter()
                    data, made = make_rendition(source, channel, "center", facts, who, lambda ing: by_sha[ing["sha256"]])
                    timings[kind].append(time.perf_counter() - start)
                sizes.append(len(data))
    ms = {k: sorted(v) for k, v in timings.items()}
    print_result({
        "images": a.images, "channels": a.channels, "requests_per_image": plan, "renditions": len(ms["signed"]),
        "median_ms_signed": round(statistics.median(ms["signed"]) * 1000, 1),
        "p95_ms_signed": round(ms["signed"][int(0.95 * (len(ms["signed"]) - 1))] * 1000, 1),
        "median_ms_unsigned": round(statistics.median(ms["unsigned"]) * 1000, 1),
        "median_ms_decoding_the_source": round(statistics.median(ms["decode"]) * 1000, 1),
        "median_kb": round(statistics.median(sizes) / 1024),
    }, a.json)


if __name__ == "__main__":
    main()

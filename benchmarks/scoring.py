"""What scoring adds to making campaign images offline (the board), and what it costs when nothing changed.

    python benchmarks/make_images.py --out /tmp/bench-200 --count 200 --size 1200x900
    python benchmarks/scoring.py --images /tmp/bench-200 --briefs 20 --model data/models/vit-b-32-shaped.pt

Builds the drop once with `drop-studio run` (embeddings, collection, references, campaign images, their
scores), then, in this process with the run's resources: times the board making every brief's image again
(`make_campaign_images`, force), scoring them all afresh (`score_drop` without scores.json; the encoder
loaded before, as a run's campaign index has it), scoring with nothing changed, and encoding the same
images alone (what the campaign index spent before it took the scores' vectors). Reports each, and what
scoring adds to making: with its encode, and net of the encode a run no longer does twice.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from report import bench_world, print_result

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--briefs", type=int, default=20)
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        drop = bench_world(tmp, a.images, a.model)
        (drop / "briefs.yaml").write_text("briefs:\n" + "".join(
            f"  - id: brief-{i:03d}\n    prompt: product shot number {i} on a plain background\n"
            f"    query: product {i}\n    top_k: 3\n" for i in range(a.briefs)))
        os.environ.pop("GEMINI_API_KEY", None)
        (Path(tmp) / "dagster_home").mkdir()
        (Path(tmp) / "dagster_home" / "dagster.yaml").write_text((ROOT / "orchestration" / "dagster.yaml").read_text())
        subprocess.run([sys.executable, "-m", "assets_pkg.cli", "run", "--drop", "bench"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)

        from assets_pkg.resources import ClipModel, DropLibrary, ImageGeneratorResource, MilvusResource, search_models
        from assets_pkg.stages.campaigns.logic import make_campaign_images, score_drop
        from assets_pkg.stages.campaigns.scores import FILE, Thresholds

        library, generator, clip = DropLibrary(), ImageGeneratorResource(), ClipModel()
        serving = search_models(library, MilvusResource()).serving
        art = library.artifacts("bench")
        gen = generator.generator()
        clip.encoder()  # loaded, as the run's campaign index step has it
        make, fresh, noop, encode = [], [], [], []
        for _ in range(a.repeat):
            start = time.perf_counter()
            made = make_campaign_images(library.drop("bench"), art, gen, "interactive", lambda size: 0.0, None, 1,
                                        True, log=lambda m: None, warn=lambda m: None)
            make.append(time.perf_counter() - start)
            (serving.files(art) / FILE).unlink()
            start = time.perf_counter()
            scored = score_drop(art, serving, clip.serving_encoder, Thresholds())
            fresh.append(time.perf_counter() - start)
            start = time.perf_counter()
            again = score_drop(art, serving, clip.serving_encoder, Thresholds())
            noop.append(time.perf_counter() - start)
            assert len(scored.scored) == len(made.generated) and again.scored == []
            start = time.perf_counter()  # what the campaign index would otherwise spend on the same images
            clip.encoder().embed_images(made.generated)
            encode.append(time.perf_counter() - start)
        m, f, n, e = (statistics.median(v) for v in (make, fresh, noop, encode))
        print_result({"images": len(list(drop.glob("*.*"))) - 1, "campaign_images": len(made.generated),
                      "model": a.model, "make_s": round(m, 3), "score_all_s": round(f, 3),
                      "of_which_image_encode_s": round(e, 3), "score_unchanged_ms": round(n * 1000, 1),
                      "scoring_adds_with_its_encode": f"{100 * f / m:.1f}%",
                      # the index takes the scores' vectors, so a run encodes each image once either way
                      "scoring_adds_to_a_run": f"{100 * (f - e) / m:.1f}%"}, a.json)


if __name__ == "__main__":
    main()

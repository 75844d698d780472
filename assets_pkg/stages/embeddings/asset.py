"""clip_embeddings: one CLIP vector per distinct image of the drop, on the GPU when there is one."""

import sys

from dagster import AssetExecutionContext, Config
from tqdm import tqdm

from ...k8s import GPU_POD
from ...metadata import table
from ...resources import ClipModel, DropLibrary, MilvusResource, search_models
from ...stage import Outcome, drop_stage
from ..scan.asset import REJECTED, raw_product_images
from .checks import EMBEDDINGS_ARE_SOUND, embeddings_are_sound
from .logic import embed_drop


class EmbeddingsConfig(Config):
    verify: bool = False  # the check reads every vector, even when the file is the one it verified before


@drop_stage(
    deps=[raw_product_images],
    group_name="catalog",
    kinds={"pytorch", "parquet"},
    pool="gpu",
    check_specs=[EMBEDDINGS_ARE_SOUND],
    op_tags={"dagster-k8s/config": GPU_POD},
    description="CLIP image embeddings (float32, unit norm) of each distinct image; reused by content hash.",
)
def clip_embeddings(context: AssetExecutionContext, drop: str, config: EmbeddingsConfig, library: DropLibrary,
                    clip: ClipModel, milvus: MilvusResource) -> Outcome:
    art = library.artifacts(drop)
    # The model's own files: a change of CLIP_MODEL encodes beside the serving model's, never over them.
    model = clip.use_in(search_models(library, milvus))
    files = model.files(art)
    bar = None  # a terminal progress bar, only once something is being encoded

    def progress(p):
        nonlocal bar
        context.log.info(f"embedded {p.done}/{p.total} images, {p.images_per_second:.1f} images/s")
        if clip.progress_bar:
            bar = bar or tqdm(total=p.total, desc=f"{drop} embeddings", unit="img", file=sys.stderr)
            bar.update(p.done - bar.n)

    try:
        # model_id() names the weights without loading them: an unchanged drop never imports torch.
        report = embed_drop(library.drop(drop), art, model.id, clip.encoder, on_progress=progress,
                            log=context.log.info, files=files)
    finally:
        if bar is not None:
            bar.close()
    for r in report.rejected:
        context.log.warning(f"rejected {drop}/{r['file']}: {r['reason']}")
    return Outcome(report.key, checks=[embeddings_are_sound(art, files, config.verify)], metadata={
        "model": report.model_id,
        "device": report.device,
        "dim": report.dim,
        "vectors": report.vectors,
        "encoded": report.encoded,
        "reused": report.reused,
        "rejected": len(report.rejected),
        "rejected_files": table(report.rejected, REJECTED),
        "encode_seconds": round(report.seconds, 3),
        "images_per_second": report.images_per_second,
        "batch_size": report.batch_size,
        "fit": clip.get("fit"),
        "dagster/row_count": report.vectors,
    })


ASSETS = [clip_embeddings]

"""Dagster resources: small configurable wrappers that hand out domain objects.

Every field is optional. Left unset, it is the environment variable named in
`SETTINGS`, read when a run uses the resource (so a run pod or the daemon sees
its own environment, like `EnvVar`), else that variable's default in
`domain/settings.py`, the only place a default is written. A run's config can
still set a field for that run (the Launchpad's "resources" section). Secrets
(MILVUS_TOKEN, GEMINI_API_KEY) are only ever read from the environment, so they
never appear in run config, logs or metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Optional

from dagster import InitResourceContext
from pydantic import PrivateAttr

from .domain.artifacts import DropArtifacts
from .domain.drops import ProductDrop
from .domain.errors import EncoderError, StudioError
from .domain.milvus import campaign_collection, campaign_uri, display_uri
from .domain.model_id import clip_model_id, embedding_id
from .domain.settings import setting
from .domain.search_models import ModelEntry, SearchModels
from .domain.store import LITE_LOCK_WAIT_S, ImageCollection, is_lite_uri
from .settings_resource import FromSettings
from .stages.campaigns.resource import ImageGeneratorResource

if TYPE_CHECKING:
    from .domain.encoder import ClipEncoder


class DropLibrary(FromSettings):
    """Where drops are read from and where each step's files are written."""

    SETTINGS: ClassVar = {"drops_dir": "DROPS_DIR", "artifacts_dir": "ARTIFACTS_DIR",
                          "max_image_pixels": "MAX_IMAGE_PIXELS", "base_images_dir": "BASE_IMAGES_DIR",
                          "publish_dir": "PUBLISH_DIR"}
    drops_dir: Optional[str] = None
    artifacts_dir: Optional[str] = None
    max_image_pixels: Optional[int] = None
    base_images_dir: Optional[str] = None
    publish_dir: Optional[str] = None

    def drop(self, name: str) -> ProductDrop:
        return ProductDrop.at(self.get("drops_dir"), name)

    def artifacts(self, name: str) -> DropArtifacts:
        return DropArtifacts.at(self.get("artifacts_dir"), name)

    def channels(self, name: str) -> dict:
        """The channels the drop's briefs may name: the table with DROPS_DIR's and the drop's channels.yaml."""
        from .domain import storage
        from .domain.channels import channels_for

        return channels_for(storage.location("DROPS_DIR", self.get("drops_dir")), self.drop(name).folder)


class ClipModel(FromSettings):
    """CLIP weights: a model name (`ViT-B/32`, downloaded on first use) or a checkpoint path.

    The weights belong to one run: set up empty when the run starts, loaded by the first step that
    encodes (so a run with nothing to encode never imports torch), shared by the run's later steps,
    and freed when the run ends.
    """

    SETTINGS: ClassVar = {"model": "CLIP_MODEL", "device": "CLIP_DEVICE", "batch_size": "CLIP_BATCH_SIZE",
                          "num_workers": "CLIP_NUM_WORKERS", "fit": "CLIP_FIT"}
    model: Optional[str] = None
    device: Optional[str] = None  # auto: CUDA when available, else CPU
    batch_size: Optional[int] = None  # 0: 256 on GPU, 32 on CPU
    num_workers: Optional[int] = None  # -1: decoding workers chosen for the device
    fit: Optional[str] = None  # pad (letterbox to square) or crop (CLIP's centre crop)
    download_root: Optional[str] = None  # where named models are cached (clip's default: ~/.cache/clip)
    progress_bar: bool = False  # a terminal progress bar (the CLI turns it on)
    _encoder: Optional["ClipEncoder"] = PrivateAttr(default=None)
    _serving: Optional["ClipModel"] = PrivateAttr(default=None)  # the serving model, while CLIP_MODEL is another

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._encoder = self._serving = None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        for clip in (self, self._serving):
            if clip is not None and clip._encoder is not None:
                clip._encoder.close()
                clip._encoder = None
        self._serving = None

    def use_in(self, models: SearchModels) -> ModelEntry:
        """This model, registered with the models of the collection (domain/search_models.py)."""
        return models.use(self.model_id(), self.get("model"), self.get("fit"))

    def serving_encoder(self, serving: ModelEntry) -> "ClipEncoder":
        """The encoder of the model search answers from: this one, or while a change of model is being
        built, the previous model (loaded from where its weights were, and checked to be those weights)."""
        if serving.id == self.model_id():
            if self._serving is not None:  # search moved to this model: the previous one is not needed
                self._serving.close()
                self._serving = None
            return self.encoder()
        if self._serving is None or self._serving.model_id() != serving.id:
            if not serving.spec:
                raise EncoderError(f"search answers from {serving.id}, whose weights are not known here: set "
                                   f"CLIP_MODEL to them once (the name or file they were loaded from)")
            other = ClipModel(model=serving.spec, fit=serving.fit, device=self.get("device"),
                              batch_size=self.get("batch_size"), num_workers=self.get("num_workers"),
                              download_root=self.download_root)
            if other.model_id() != serving.id:
                raise EncoderError(f"search answers from {serving.id}, but {serving.spec} now holds other weights "
                                   f"({other.model_id()}): put those weights back, or finish the change of model")
            if self._serving is not None:
                self._serving.close()
            self._serving = other
        return self._serving.encoder()

    def model_id(self) -> str:
        """What the vectors depend on (the weights' identity and the fit), without importing torch or loading
        the weights."""
        return embedding_id(clip_model_id(self.get("model")), self.get("fit"))

    def encoder(self) -> "ClipEncoder":
        if self._encoder is None:
            # torch and clip are imported here, by the steps that encode, not when the code location loads.
            from .domain.encoder import ClipEncoder

            self._encoder = ClipEncoder(self.get("model"), self.get("device"), self.get("batch_size"),
                                        self.get("num_workers"), self.get("fit"), self.download_root)
        return self._encoder


class MilvusResource(FromSettings):
    """A Milvus Lite file path (default) or a server URI; the token only from MILVUS_TOKEN."""

    SETTINGS: ClassVar = {"uri": "DROP_STUDIO_MILVUS_URI", "collection": "MILVUS_COLLECTION", "timeout_s": "MILVUS_TIMEOUT_S",
                          "retries": "MILVUS_RETRIES"}
    uri: Optional[str] = None
    collection: Optional[str] = None
    timeout_s: Optional[int] = None  # per call
    retries: Optional[int] = None  # extra tries for transient failures (server restarting), exponential backoff

    def search_note(self) -> str | None:
        """The one line to say at the start of a run or of `serve` when search is CLIP alone (a Milvus server
        older than 2.5). Milvus Lite always has BM25, so nothing is opened for it."""
        if is_lite_uri(self.get("uri")):
            return None
        with self.store() as store:
            return store.search_note()

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Said once per run, at its start.
        if context.log is None:
            return
        try:
            note = self.search_note()
        except StudioError:
            return  # unreachable now: the step that needs Milvus says so in one line
        if note:
            context.log.warning(note)

    def store(self, lock_timeout: float = LITE_LOCK_WAIT_S, share: bool = False,
              collection: str | None = None) -> ImageCollection:
        """A product collection: MILVUS_COLLECTION, or `collection` (a model's own, domain/search_models.py).
        `lock_timeout`: how long to wait for a Milvus Lite file another process holds (a run waits its turn;
        the search page answers 503 after a few seconds instead). `share`: let other processes use this
        one's Milvus for the file while it is open (the search page)."""
        return self._store(collection or self.get("collection"), self.get("uri"), lock_timeout, share)

    def campaign_store(self, lock_timeout: float = LITE_LOCK_WAIT_S, share: bool = False,
                       collection: str | None = None) -> ImageCollection:
        """The collection of generated campaign images beside a product collection (`<collection>_campaigns`;
        for Milvus Lite in a file of its own, see stages/campaign_index)."""
        return self._store(campaign_collection(collection or self.get("collection")), campaign_uri(self.get("uri")),
                           lock_timeout, share, scores=True)

    def _store(self, collection: str, uri: str, lock_timeout: float, share: bool, scores: bool = False) -> ImageCollection:
        return ImageCollection(uri, setting("MILVUS_TOKEN"), collection, lock_timeout=lock_timeout,
                               timeout=self.get("timeout_s"), retries=self.get("retries"), share=share, scores=scores)

    @property
    def display_uri(self) -> str:
        return display_uri(self.get("uri"))


def search_models(library: DropLibrary, milvus: "MilvusResource") -> SearchModels:
    """Which model search answers from, and each model's collection and files."""
    return SearchModels.load(library.get("artifacts_dir"), milvus.get("collection"))


def build_resources(progress_bar: bool = False) -> dict:
    """The resources of every run; each reads its settings when a run uses it."""
    return {"library": DropLibrary(), "clip": ClipModel(progress_bar=progress_bar), "milvus": MilvusResource(),
            "generator": ImageGeneratorResource()}

"""The Gemini ("Nano Banana") image generator: one request per image, or a Batch API job; the offline
stand-in is board.py. Both take a brief and its references and return a `Generation` (generation.py)."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path
from typing import Sequence

from PIL import Image

from ...domain.drops import load_rgb
from ...domain.errors import GeneratorError
from ...domain.image_models import ImageModel
from ...domain.settings import DEFAULTS
from ..briefs.logic import Brief
from .generation import EDIT_MAX_BYTES, EDIT_MAX_SIDE, Edit, Generation, Reference, png_bytes

RETRY_STATUS_CODES = (408, 429, 500, 502, 503, 504)
# Batch job states after which the job will not change any more (the SDK's names).
BATCH_DONE = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
# The Batch API takes inline requests up to 20 MB in all (larger jobs need an uploaded JSONL file).
BATCH_INLINE_LIMIT = 19_500_000


def prepare_reference(path: Path, max_side: int = 1024) -> Image.Image:
    """EXIF-oriented RGB, at most `max_side` pixels on the long side, to keep requests small."""
    img = load_rgb(path)
    img.thumbnail((max_side, max_side))
    return img


class GeminiGenerator:
    """Calls a Gemini image model through the `google-genai` SDK, one request per image or as a Batch API job.

    The SDK's own retry (HttpRetryOptions: exponential backoff with jitter) handles
    408/429/5xx; the base URL is left to the SDK so `GOOGLE_GEMINI_BASE_URL` works.
    A model that is shut down, or past its announced shutdown date, is refused before any request.
    """

    name = "gemini"

    def __init__(
        self,
        api_key: str | None,
        model: ImageModel,
        timeout_s: float = DEFAULTS["GEMINI_TIMEOUT_S"],
        attempts: int = DEFAULTS["GEMINI_ATTEMPTS"],
        initial_delay_s: float = DEFAULTS["GEMINI_RETRY_INITIAL_DELAY_MS"] / 1000,
        max_delay_s: float = 30.0,
        max_reference_images: int = DEFAULTS["GEMINI_MAX_REFERENCE_IMAGES"],
        reference_max_side: int = 1024,
        api_version: str = "v1beta",
        today: date | None = None,
    ):
        from google import genai
        from google.genai import types

        why = model.unavailable(today or date.today())
        if why:
            raise GeneratorError(f"GEMINI_IMAGE_MODEL={model.id!r}: {why}")
        self.info = model
        self.model = model.id
        self.max_reference_images = max_reference_images or model.max_references
        self.reference_max_side = reference_max_side
        self._types = types
        http = types.HttpOptions(
            api_version=api_version,
            timeout=int(timeout_s * 1000),
            retry_options=types.HttpRetryOptions(
                attempts=attempts,
                initial_delay=initial_delay_s,
                max_delay=max_delay_s,
                exp_base=2,
                jitter=1,
                http_status_codes=list(RETRY_STATUS_CODES),
            ),
        )
        # api_key=None lets the SDK use Vertex AI settings from its own environment variables.
        self._client = genai.Client(api_key=api_key, http_options=http) if api_key else genai.Client(http_options=http)

    def _request(self, brief: Brief, references: Sequence[Reference], edit: Edit | None = None):
        """(contents, config) of the request for one image of `brief`. References go as JPEG: the SDK
        would send a PIL image as PNG, several times larger for photos (and batch jobs are capped at
        20 MB of inline requests). An edit sends the image to change first, then the references, then
        the instruction: the model's image-editing request."""
        types = self._types
        images = []
        for r in references[: self.max_reference_images - (1 if edit else 0)]:
            buf = io.BytesIO()
            prepare_reference(r.path, self.reference_max_side).save(buf, "JPEG", quality=90)
            images.append(types.Part.from_bytes(data=buf.getvalue(), mime_type="image/jpeg"))
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=brief.aspect_ratio, image_size=brief.image_size),
        )
        if edit is not None:
            return [self._edit_part(edit.image), *images, edit.instruction], config
        return [brief.prompt, *images], config

    def _edit_part(self, path: Path):
        from ...domain import storage

        data = storage.read_bytes(path)
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
        if fmt in ("PNG", "JPEG", "WEBP") and len(data) <= EDIT_MAX_BYTES:
            return self._types.Part.from_bytes(data=data, mime_type=f"image/{fmt.lower()}")
        buf = io.BytesIO()
        prepare_reference(path, EDIT_MAX_SIDE).save(buf, "JPEG", quality=92)
        return self._types.Part.from_bytes(data=buf.getvalue(), mime_type="image/jpeg")

    def _client_error(self, e) -> GeneratorError | None:
        """Wrong model or credentials fail every brief alike: stop the run with one clear line."""
        if e.code == 404:
            return GeneratorError(f"GEMINI_IMAGE_MODEL={self.model!r}: model not found ({e.status})")
        if e.code in (401, 403):
            return GeneratorError(
                f"GEMINI_IMAGE_MODEL={self.model!r}: access denied ({e.code} {e.status}); check GEMINI_API_KEY "
                f"and that the Gemini API is enabled"
            )
        return None

    def generate(self, brief: Brief, references: Sequence[Reference], edit: Edit | None = None) -> Generation:
        from google.genai import errors

        contents, config = self._request(brief, references, edit)
        try:
            resp = self._client.models.generate_content(model=self.model, contents=contents, config=config)
        except errors.ClientError as e:
            fatal = self._client_error(e)
            if fatal:
                raise fatal from None
            return self._failed(brief, f"HTTP_{e.code}", e.status or "")  # e.g. 429 after every retry
        except errors.ServerError as e:
            return self._failed(brief, f"HTTP_{e.code}", f"{e.status} after retries")
        except Exception as e:  # the SDK re-raises transport errors after its retries
            name = type(e).__name__
            if "Timeout" in name:
                return self._failed(brief, "TIMEOUT", f"no reply within the request timeout ({name})")
            if "Connect" in name or isinstance(e, OSError):
                return self._failed(brief, "CONNECTION_ERROR", name)
            raise
        return self._parse(brief, resp)

    # -- Batch API ---------------------------------------------------------------------------------
    def batch_requests(self, items: Sequence[tuple[str, Brief, Sequence[Reference], Edit | None]]) -> list:
        """The inline requests of one Batch API job for `items` (key, brief, references); refused in one
        line when they are over the inline limit. Each request carries its key, so results are matched by
        key, not by position."""
        types = self._types
        requests, size = [], 0
        for key, brief, refs, edit in items:
            contents, config = self._request(brief, refs, edit)
            size += sum(len(c.inline_data.data) * 4 // 3 if hasattr(c, "inline_data") else len(c) for c in contents)
            requests.append(types.InlinedRequest(model=self.model, contents=contents, config=config,
                                                 metadata={"key": key}))
        if size > BATCH_INLINE_LIMIT:
            raise GeneratorError(
                f"GEMINI_MODE=batch: {len(items)} image request(s) with their references are about "
                f"{size / 1e6:.1f} MB, over the Batch API's {BATCH_INLINE_LIMIT / 1e6:.0f} MB limit for inline "
                f"requests; lower GEMINI_MAX_REFERENCE_IMAGES or top_k, or use GEMINI_MODE=interactive. "
                f"Nothing was submitted"
            )
        return requests

    def submit_batch(self, requests: list, display_name: str) -> str:
        """Submit the job; returns its name."""
        from google.genai import errors

        types = self._types
        try:
            job = self._client.batches.create(model=self.model, src=requests,
                                              config=types.CreateBatchJobConfig(display_name=display_name))
        except errors.ClientError as e:
            raise self._client_error(e) or GeneratorError(
                f"GEMINI_IMAGE_MODEL={self.model!r}: the Batch API refused the job ({e.code} {e.status})") from None
        return job.name

    def find_batch(self, display_name: str) -> str | None:
        """The job submitted under `display_name`, if the API has one (a run that died right after
        submitting did not get to record its name)."""
        for job in self._client.batches.list():
            if job.display_name == display_name:
                return job.name
        return None

    def batch_state(self, name: str) -> tuple[str, bool]:
        """(the job's state, whether it is done), without reading its results."""
        job = self._client.batches.get(name=name)
        state = job.state.name if hasattr(job.state, "name") else str(job.state)
        return state, state in BATCH_DONE

    def batch_results(self, name: str) -> tuple[str, dict[str, Generation] | None]:
        """(state, {key: Generation}) once the job is done, (state, None) while it is not."""
        job = self._client.batches.get(name=name)
        state = job.state.name if hasattr(job.state, "name") else str(job.state)
        if state not in BATCH_DONE:
            return state, None
        results: dict[str, Generation] = {}
        if state == "JOB_STATE_SUCCEEDED" and job.dest is not None:
            for item in job.dest.inlined_responses or []:
                key = (item.metadata or {}).get("key", "")
                if item.response is not None:
                    results[key] = self._parse(None, item.response)
                else:
                    err = item.error or {}
                    code = getattr(err, "code", None) or (err.get("code") if isinstance(err, dict) else None)
                    results[key] = self._failed(None, f"HTTP_{code or 'ERROR'}", str(err)[:200])
        return state, results

    def _failed(self, brief: Brief | None, reason: str, text: str) -> Generation:
        return Generation(brief.id if brief else "", self.name, self.model, None, text=text, finish_reason=reason)

    def _parse(self, brief: Brief | None, resp) -> Generation:
        png, texts, finish = None, [], None
        for cand in resp.candidates or []:
            finish = cand.finish_reason.name if cand.finish_reason is not None else finish
            for part in (cand.content.parts if cand.content and cand.content.parts else []):
                if part.inline_data is not None and part.inline_data.data and png is None:
                    with Image.open(io.BytesIO(part.inline_data.data)) as im:
                        png = png_bytes(im.convert("RGB"))
                elif part.text:
                    texts.append(part.text)
        if png is None and resp.prompt_feedback is not None and resp.prompt_feedback.block_reason is not None:
            finish = resp.prompt_feedback.block_reason.name
        if png is None and finish in (None, "STOP"):
            finish = "NO_IMAGE"  # a text-only reply
        usage = {}
        if resp.usage_metadata is not None:
            usage = {
                k: v
                for k, v in resp.usage_metadata.model_dump(exclude_none=True).items()
                if isinstance(v, (int, float))
            }
        return Generation(brief.id if brief else "", self.name, self.model, png, text="\n".join(texts),
                          finish_reason=finish, usage=usage)

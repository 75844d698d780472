"""Loading CLIP weights: OpenAI CLIP through `clip` (a name or a checkpoint file) or open_clip's
(`open_clip:ARCH:TAG_OR_FILE`), each with its own preprocessing, tokenizer and embedding size."""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import EncoderError
from .model_id import clip_model_id, open_clip_parts

with warnings.catch_warnings():
    # clip-anytorch still imports pkg_resources; the warning is noise for users.
    warnings.simplefilter("ignore")
    import clip


@contextmanager
def _weights_to_be_loaded():
    """Modules built only to receive a checkpoint's weights skip torch's random initialisation, as Hugging Face's
    `no_init_weights` does: a strict `load_state_dict` then overwrites every parameter. ViT-B/32 loads in 0.5-0.9 s
    instead of 1.7-2.0 s on 2 cores, in every process that embeds or searches."""
    init = torch.nn.init
    saved = {n: getattr(init, n) for n in dir(init) if n.endswith("_") and not n.startswith("_")}
    for n in saved:
        setattr(init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


@dataclass
class LoadedModel:
    """Weights in eval mode with what using them takes: their own preprocessing and tokenizer, the embedding
    dimension and the input side their preprocessing produces."""

    model: torch.nn.Module
    preprocess: Callable
    tokenize: Callable[[list[str]], torch.Tensor]
    dim: int
    resolution: int
    trim_padding: bool  # OpenAI CLIP's causal text tower reads the end-of-text token: zero padding can go


def load_clip(name: str, device: str, download_root: str | None = None) -> LoadedModel:
    """OpenAI CLIP weights through `clip` (a name or a checkpoint file), or open_clip's (`open_clip:...`); one
    clear line when the weights are missing or not what the name says."""
    clip_model_id(name)  # a name or a file, else one clear line
    if open_clip_parts(name) is not None:
        return _load_open_clip(name, device, download_root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _weights_to_be_loaded():
                model, preprocess = clip.load(name, device=device, jit=False, download_root=download_root)
    except EncoderError:
        raise
    except Exception as e:
        root = download_root or os.path.expanduser("~/.cache/clip")
        if name in clip.available_models():
            raise EncoderError(
                f"CLIP_MODEL={name!r}: weights are not in {root} and could not be downloaded "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); copy the .pt file there "
                f"or set CLIP_MODEL to a local checkpoint"
            ) from None
        raise EncoderError(f"CLIP_MODEL={name!r}: not a loadable CLIP checkpoint ({type(e).__name__}: {e})") from None
    model = model.eval()
    return LoadedModel(model, preprocess, lambda texts: clip.tokenize(texts, truncate=True),
                       int(model.text_projection.shape[1]), int(model.visual.input_resolution), True)


def _load_open_clip(name: str, device: str, download_root: str | None) -> LoadedModel:
    """open_clip weights by pretrained tag (from open_clip's cache, downloaded there on first use) or from a
    file, with the architecture's own transforms, tokenizer and context length; half precision on a GPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import open_clip
    arch, pretrained = open_clip_parts(name)
    if arch not in open_clip.list_models():
        raise EncoderError(f"CLIP_MODEL={name!r}: open_clip has no architecture {arch!r} "
                           f"(open_clip.list_models() lists {len(open_clip.list_models())}, e.g. ViT-B-32, "
                           f"ViT-B-16-SigLIP2, MobileCLIP-S2)")
    precision = "fp16" if device.startswith("cuda") else "fp32"
    try:
        with _weights_to_be_loaded():  # `pretrained` is always given: the weights are loaded strictly
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained, device=device, precision=precision, cache_dir=download_root)
    except Exception as e:
        if Path(pretrained).is_file():
            raise EncoderError(f"CLIP_MODEL={name!r}: {pretrained} is not {arch} weights ({_first_line(e)})") from None
        raise EncoderError(
            f"CLIP_MODEL={name!r}: the weights are not in open_clip's cache and could not be downloaded "
            f"({_first_line(e)}); download them where there is internet, or set open_clip:{arch}:/path/to/weights"
        ) from None
    from timm.utils import reparameterize_model

    # MobileCLIP's FastViT branches fuse into single convolutions for inference (same outputs, faster);
    # other architectures have nothing to fuse.
    model = reparameterize_model(model.eval(), inplace=True)
    tokenizer = None

    def tokenize(texts: list[str]) -> torch.Tensor:
        # Loaded on first use: a run that only embeds images needs no tokenizer (some come from the
        # Hugging Face hub, e.g. SigLIP 2's multilingual one).
        nonlocal tokenizer
        if tokenizer is None:
            try:
                tokenizer = open_clip.get_tokenizer(arch, cache_dir=download_root)
            except ModuleNotFoundError as e:
                raise EncoderError(f"CLIP_MODEL={name!r}: its tokenizer needs the {e.name!r} package: "
                                   f"pip install -e '.[multilingual]'") from None
            except Exception as e:
                raise EncoderError(f"CLIP_MODEL={name!r}: its tokenizer is not in the Hugging Face cache and could "
                                   f"not be downloaded ({_first_line(e)})") from None
        return tokenizer(texts)

    config = open_clip.get_model_config(arch)
    side = config["vision_cfg"].get("image_size", 224)
    return LoadedModel(model.eval(), preprocess, tokenize, int(config["embed_dim"]),
                       int(max(side) if isinstance(side, (tuple, list)) else side), False)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__

"""What a run's requests will cost, and the cap it may not pass (GEMINI_MAX_COST_USD): refused before any
request."""

from __future__ import annotations

from typing import Callable, Sequence


from ...domain.errors import GeneratorError
from .requests import ImageRequest


def estimate(requests: Sequence[ImageRequest], price: Callable[[str], float | None]) -> tuple[float, list[str]]:
    """(estimated USD for the requests, sizes the price table has no price for)."""
    total, unknown = 0.0, []
    for req in requests:
        usd = price(req.brief.image_size)
        if usd is None:
            unknown.append(req.brief.image_size)
        else:
            total += usd
    return round(total, 6), sorted(set(unknown))


def check_budget(requests: Sequence[ImageRequest], price: Callable[[str], float | None], cap: float | None,
                 model: str, mode: str) -> float:
    """The run's estimated spend; over the cap (GEMINI_MAX_COST_USD) nothing may be requested."""
    total, unknown = estimate(requests, price)
    if cap is None or not requests:
        return total
    if unknown:
        raise GeneratorError(
            f"GEMINI_MAX_COST_USD={cap:g} but the model table has no {mode} price for {model} at "
            f"{', '.join(unknown)}; add it with GEMINI_MODELS, or unset the cap. Nothing was requested"
        )
    if total > cap:
        raise GeneratorError(
            f"estimated ${total:.3f} for {len(requests)} image(s) on {model} ({mode}) is over "
            f"GEMINI_MAX_COST_USD={cap:g}; nothing was requested"
        )
    return total

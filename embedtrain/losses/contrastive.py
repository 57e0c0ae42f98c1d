"""In-batch-negative contrastive losses (InfoNCE / MultipleNegativesRankingLoss) and their GradCache form.

Thin recipe-facing factories over sentence-transformers' implementations: they accept either
``scale`` or its inverse ``temperature`` and expose ``gather_across_devices`` so that in-batch
negatives are shared across processes under ``accelerate launch``.
"""

from __future__ import annotations

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.registry import LossContext, register_loss

CONTRASTIVE_FORMATS = {"pairs", "triplets", "hard_negatives"}


def scale_from(scale: float | None, temperature: float | None, default: float = 20.0) -> float:
    """Logit scale from either ``scale`` or ``temperature`` (``scale = 1 / temperature``)."""
    if scale is not None and temperature is not None:
        raise ValueError("set either 'scale' or 'temperature', not both")
    if temperature is not None:
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        return 1.0 / temperature
    return float(scale) if scale is not None else default


@register_loss("mnrl", formats=CONTRASTIVE_FORMATS,
               description="MultipleNegativesRankingLoss (InfoNCE with in-batch + hard negatives)")
def mnrl(model, ctx: LossContext, *, scale: float | None = None, temperature: float | None = None,
         gather_across_devices: bool = False, symmetric: bool = False):
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    return st_losses.MultipleNegativesRankingLoss(
        model, scale=scale_from(scale, temperature), gather_across_devices=gather_across_devices,
        directions=directions)


@register_loss("cached_mnrl", formats=CONTRASTIVE_FORMATS,
               description="GradCache MultipleNegativesRankingLoss: large batches in constant memory")
def cached_mnrl(model, ctx: LossContext, *, scale: float | None = None, temperature: float | None = None,
                mini_batch_size: int = 32, gather_across_devices: bool = False, symmetric: bool = False):
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    return st_losses.CachedMultipleNegativesRankingLoss(
        model, scale=scale_from(scale, temperature), mini_batch_size=mini_batch_size,
        gather_across_devices=gather_across_devices, directions=directions)

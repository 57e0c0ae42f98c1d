"""GISTEmbed: contrastive loss whose negatives are vetted by a frozen guide model.

For each query the guide scores the query-positive pair; every in-batch candidate (other
positives, other anchors, hard negatives) that the guide rates more similar to the query than
``positive_score - margin`` (``absolute``) or ``positive_score - |positive_score| * margin``
(``relative``) is treated as a likely false negative and masked out of the softmax.

Both losses wrap sentence-transformers' ``GISTEmbedLoss`` / ``CachedGISTEmbedLoss``. The plain
one in sentence-transformers takes at most one negative column; :class:`MultiNegativeGISTEmbedLoss`
merges ``negative_1 ... negative_n`` into one padded feature batch (sentence-transformers'
``merge_feature_batches``) first, so every hard negative of every row is a candidate for every
query, as in MNRL. The cached (GradCache) variant handles several negative columns natively.

The guide is a local folder or a packaged short name, resolved relative to the recipe; training
the packaged all-MiniLM-L6-v2 with ``guide: all-MiniLM-L6-v2`` uses a frozen copy of the
starting model as guide.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from sentence_transformers.base.losses.merged_forward import merge_feature_batches
from sentence_transformers.sentence_transformer import losses as st_losses
from torch import Tensor

from embedtrain.losses.contrastive import CONTRASTIVE_FORMATS
from embedtrain.losses.registry import LossContext, register_loss
from embedtrain.models.resolve import load_model, resolve_model_path


class MultiNegativeGISTEmbedLoss(st_losses.GISTEmbedLoss):
    """``GISTEmbedLoss`` that also accepts ``(anchor, positive, negative_1, ..., negative_n)``."""

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        features = list(sentence_features)
        if len(features) > 3:
            merged = merge_feature_batches(features[2:])
            if merged is None:
                raise ValueError("cannot batch the negative columns together for 'gist' (different features per "
                                 "column); use 'cached_gist', which embeds each negative column separately")
            features = [features[0], features[1], merged]
        return super().forward(features, labels)


def load_guide(name_or_path: str, model, ctx: LossContext):
    """Load the frozen guide model next to ``model`` (path relative to the recipe, or a packaged name)."""
    path = resolve_model_path(name_or_path, base_dir=ctx.base_dir, file=ctx.recipe_file, line=ctx.line,
                              field=f"{ctx.field}.params.guide")
    guide = load_model(path, device=str(model.device))
    guide.eval()
    guide.requires_grad_(False)
    return guide


def _check_margin(margin_strategy: str, margin: float) -> None:
    if margin_strategy not in ("absolute", "relative"):
        raise ValueError(f"margin_strategy must be 'absolute' or 'relative', got '{margin_strategy}'")
    if margin < 0:
        raise ValueError("margin must be >= 0")


@register_loss("gist", formats=CONTRASTIVE_FORMATS,
               description="GISTEmbed: MNRL whose false negatives are masked by a frozen guide model")
def gist(model, ctx: LossContext, *, guide: str, temperature: float = 0.01,
         margin_strategy: Literal["absolute", "relative"] = "absolute", margin: float = 0.0,
         contrast_anchors: bool = True, contrast_positives: bool = True, gather_across_devices: bool = False):
    _check_margin(margin_strategy, margin)
    return MultiNegativeGISTEmbedLoss(
        model, load_guide(guide, model, ctx), temperature=temperature, margin_strategy=margin_strategy,
        margin=margin, contrast_anchors=contrast_anchors, contrast_positives=contrast_positives,
        gather_across_devices=gather_across_devices)


@register_loss("cached_gist", formats=CONTRASTIVE_FORMATS,
               description="GradCache GISTEmbed: guide-masked contrastive loss for large batches")
def cached_gist(model, ctx: LossContext, *, guide: str, temperature: float = 0.01, mini_batch_size: int = 32,
                margin_strategy: Literal["absolute", "relative"] = "absolute", margin: float = 0.0,
                contrast_anchors: bool = True, contrast_positives: bool = True,
                gather_across_devices: bool = False):
    _check_margin(margin_strategy, margin)
    return st_losses.CachedGISTEmbedLoss(
        model, load_guide(guide, model, ctx), temperature=temperature, mini_batch_size=mini_batch_size,
        margin_strategy=margin_strategy, margin=margin, contrast_anchors=contrast_anchors,
        contrast_positives=contrast_positives, gather_across_devices=gather_across_devices)

"""GradCache GISTEmbed, as recipes name it: ``cached_gist``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.gist import MarginStrategy, MaskedCandidateStats, check_margin, guide_path, load_guide
from embedtrain.losses.registry import CONTRASTIVE_FORMATS, register_loss

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext


@register_loss("cached_gist", formats=CONTRASTIVE_FORMATS,
               description="GradCache GISTEmbed: guide-masked contrastive loss for large batches")
class CachedGISTEmbedLoss(MaskedCandidateStats, st_losses.CachedGISTEmbedLoss):
    """sentence-transformers' ``CachedGISTEmbedLoss``: ``gist`` computed with GradCache, so the batch (the
    number of in-batch candidates) can be large in constant memory. Each negative column is embedded
    separately, so any number of hard negatives works.

    Args: as ``gist``, plus ``mini_batch_size`` (texts embedded at once).

    Inputs: (anchor, positive[, negative_1, ..., negative_n]) texts, no labels.

    Training logs ``gist_masked_fraction`` like ``gist``.

    Example::

        loss: {name: cached_gist, params: {guide: all-MiniLM-L6-v2, mini_batch_size: 64}}

    Citation: Solatorio, 2024 (arXiv:2402.16829); Gao et al., 2021 (arXiv:2101.06983).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._start_counting()

    def calculate_loss(self, reps, reps_guided, *, with_backward: bool = False):
        self._batch_rows = sum(int(r.size(0)) for r in reps[0])  # the cross-entropy sees mini-batches
        try:
            return super().calculate_loss(reps, reps_guided, with_backward=with_backward)
        finally:
            self._batch_rows = None

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        if "guide" in params:
            guide_path(params["guide"], ctx)

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, guide: str, temperature: float = 0.01, mini_batch_size: int = 32,
                    margin_strategy: MarginStrategy = "absolute", margin: float = 0.0, contrast_anchors: bool = True,
                    contrast_positives: bool = True, gather_across_devices: bool = False):
        check_margin(margin_strategy, margin)
        return cls(model, load_guide(guide, model, ctx), temperature=temperature, mini_batch_size=mini_batch_size,
                   margin_strategy=margin_strategy, margin=margin, contrast_anchors=contrast_anchors,
                   contrast_positives=contrast_positives, gather_across_devices=gather_across_devices)

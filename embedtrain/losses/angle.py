"""AnglE: CoSENT on angle differences, as recipes name it: ``angle``."""

from __future__ import annotations

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.registry import SCORED_FORMATS, register_loss


@register_loss("angle", formats=SCORED_FORMATS, description="AnglE: CoSENT on angle differences in complex space")
class AnglELoss(st_losses.AnglELoss):
    """sentence-transformers' ``AnglELoss``: CoSENT whose similarity is the angle difference of the two
    embeddings in complex space, which keeps gradients away from the saturated zones of the cosine.

    Args:
        model: the SentenceTransformer being trained.
        scale: inverse temperature; default 20.

    Inputs: (sentence1, sentence2) texts with a score label, as ``cosent``.

    Example::

        loss: {name: angle}

    Citation: Li and Li, "AnglE-optimized Text Embeddings", 2023 (arXiv:2309.12871).
    """

    def __init__(self, model, scale: float = 20.0) -> None:
        super().__init__(model, scale=scale)

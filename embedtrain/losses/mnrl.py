"""InfoNCE with in-batch and hard negatives (MultipleNegativesRankingLoss), as recipes name it: ``mnrl``."""

from __future__ import annotations

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.registry import CONTRASTIVE_FORMATS, register_loss


def scale_from(scale: float | None, temperature: float | None, default: float = 20.0) -> float:
    """Logit scale from either ``scale`` or its inverse ``temperature`` (``scale = 1 / temperature``)."""
    if scale is not None and temperature is not None:
        raise ValueError("set either 'scale' or 'temperature', not both")
    if temperature is not None:
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        return 1.0 / temperature
    return float(scale) if scale is not None else default


def directions_for(symmetric: bool) -> tuple[str, ...]:
    """Query-to-document only, or both directions (the symmetric InfoNCE of e.g. GTE)."""
    return ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)


@register_loss("mnrl", formats=CONTRASTIVE_FORMATS,
               description="MultipleNegativesRankingLoss (InfoNCE with in-batch + hard negatives)")
class MultipleNegativesRankingLoss(st_losses.MultipleNegativesRankingLoss):
    """sentence-transformers' ``MultipleNegativesRankingLoss`` with recipe-friendly settings.

    For each anchor, its positive must score higher than every other positive in the batch, every hard
    negative in the batch and (with ``gather_across_devices``) those of every other process.

    Args:
        model: the SentenceTransformer being trained.
        scale: logit scale (cosine similarities are multiplied by it); default 20.
        temperature: the inverse of ``scale`` (``0.05`` == scale 20); give one of the two.
        gather_across_devices: share in-batch negatives across processes under ``accelerate launch``.
        symmetric: also score documents -> queries (both directions of InfoNCE).

    Inputs:
        +------------------------------------------------+--------+
        | Texts                                          | Labels |
        +================================================+========+
        | (anchor, positive) pairs                       | none   |
        +------------------------------------------------+--------+
        | (anchor, positive, negative_1, ..., negative_n)| none   |
        +------------------------------------------------+--------+

    Example::

        loss: {name: mnrl, params: {temperature: 0.05, gather_across_devices: true}}

    Citation: van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018
    (arXiv:1807.03748); Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply",
    2017 (arXiv:1705.00652).
    """

    def __init__(self, model, scale: float | None = None, temperature: float | None = None,
                 gather_across_devices: bool = False, symmetric: bool = False) -> None:
        super().__init__(model, scale=scale_from(scale, temperature), gather_across_devices=gather_across_devices,
                         directions=directions_for(symmetric))
        self.symmetric = symmetric

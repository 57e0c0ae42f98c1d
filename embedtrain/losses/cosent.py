"""CoSENT: ranking loss for scored sentence pairs, as recipes name it: ``cosent``."""

from __future__ import annotations

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.registry import SCORED_FORMATS, register_loss


@register_loss("cosent", formats=SCORED_FORMATS,
               description="CoSENT: pairwise ranking of cosine similarities by gold score")
class CoSENTLoss(st_losses.CoSENTLoss):
    """sentence-transformers' ``CoSENTLoss``: every pair of pairs in the batch whose gold scores are ordered
    must have cosine similarities in the same order. Only the ranking of the gold scores matters, so scores
    need no normalisation.

    Args:
        model: the SentenceTransformer being trained.
        scale: inverse temperature of the pairwise softmax; default 20.

    Inputs:
        +--------------------------+--------------------+
        | Texts                    | Labels             |
        +==========================+====================+
        | (sentence1, sentence2)   | score (any scale)  |
        +--------------------------+--------------------+

    Example::

        datasets: [{name: stsb, path: stsb_train.jsonl, format: scored_pairs}]
        loss: {name: cosent, params: {scale: 20.0}}

    Citation: Su, "CoSENT", 2022 (https://kexue.fm/archives/8847).
    """

    def __init__(self, model, scale: float = 20.0) -> None:
        super().__init__(model, scale=scale)

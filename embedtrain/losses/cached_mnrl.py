"""GradCache InfoNCE (CachedMultipleNegativesRankingLoss), as recipes name it: ``cached_mnrl``."""

from __future__ import annotations

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.mnrl import directions_for, scale_from
from embedtrain.losses.registry import CONTRASTIVE_FORMATS, register_loss


@register_loss("cached_mnrl", formats=CONTRASTIVE_FORMATS,
               description="GradCache MultipleNegativesRankingLoss: large batches in constant memory")
class CachedMultipleNegativesRankingLoss(st_losses.CachedMultipleNegativesRankingLoss):
    """sentence-transformers' ``CachedMultipleNegativesRankingLoss`` with recipe-friendly settings.

    The same objective as ``mnrl``, computed with GradCache: embeddings of the whole batch are computed in
    ``mini_batch_size`` chunks without gradients, the loss gradient w.r.t. the embeddings is cached, and each
    chunk is re-run with gradients. Memory is that of one mini-batch, so the batch (the number of in-batch
    negatives) can be as large as the data allows.

    Args:
        model: the SentenceTransformer being trained.
        scale / temperature: logit scale or its inverse (give one; default scale 20).
        mini_batch_size: texts embedded at once.
        gather_across_devices: share in-batch negatives across processes.
        symmetric: also score documents -> queries.

    Inputs: as ``mnrl`` (pairs, triplets, hard negatives; no labels).

    Example::

        loss: {name: cached_mnrl, params: {temperature: 0.05, mini_batch_size: 32}}
        training: {per_device_train_batch_size: 4096}

    Citation: Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021
    (arXiv:2101.06983).
    """

    def __init__(self, model, scale: float | None = None, temperature: float | None = None,
                 mini_batch_size: int = 32, gather_across_devices: bool = False, symmetric: bool = False) -> None:
        super().__init__(model, scale=scale_from(scale, temperature), mini_batch_size=mini_batch_size,
                         gather_across_devices=gather_across_devices, directions=directions_for(symmetric))
        self.symmetric = symmetric

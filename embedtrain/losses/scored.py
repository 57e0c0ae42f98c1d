"""Losses for scored sentence pairs (STS-style data): CoSENT and AnglE.

Both only use the ranking of the gold scores within a batch, so scores need no normalisation.
"""

from __future__ import annotations

from sentence_transformers.sentence_transformer import losses as st_losses

from embedtrain.losses.registry import LossContext, register_loss


@register_loss("cosent", formats={"scored_pairs"},
               description="CoSENT: pairwise ranking of cosine similarities by gold score")
def cosent(model, ctx: LossContext, *, scale: float = 20.0):
    return st_losses.CoSENTLoss(model, scale=scale)


@register_loss("angle", formats={"scored_pairs"},
               description="AnglE: CoSENT on angle differences in complex space")
def angle(model, ctx: LossContext, *, scale: float = 20.0):
    return st_losses.AnglELoss(model, scale=scale)

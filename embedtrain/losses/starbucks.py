"""Starbucks representation learning (SRL): the inner loss on a fixed list of (layer, dim) pairs.

Unlike 2DMSE, which samples one sub-network per step, Starbucks trains *every* pair of a fixed
small-to-large list each step, plus a KL term pulling each sub-network's in-batch similarity
distribution towards the full model's. The default list is the paper's
``(2,32) (4,64) (6,128) (8,256) (10,512) (12,768)`` scaled to the model's depth and width
(:func:`embedtrain.models.subnetwork_pairs.default_pairs`). Works with plain and GradCache inner
losses and with any data the inner loss takes (hard negatives included); see
:mod:`embedtrain.losses.subnetwork` for how.
"""

from __future__ import annotations

from embedtrain.losses.matryoshka import ANY_FORMAT
from embedtrain.losses.registry import LossContext, register_loss
from embedtrain.losses.subnetwork import SubnetworkLoss
from embedtrain.models.subnetwork_pairs import default_pairs, validate_pairs
from embedtrain.models.subnetworks import SubnetworkEmbedder


class FixedPairs:
    """Pair picker that returns the same list every step."""

    def __init__(self, pairs: list[tuple[int, int]]) -> None:
        self.pairs = pairs

    def __call__(self) -> list[tuple[int, int]]:
        return self.pairs


@register_loss("starbucks", formats=ANY_FORMAT, wraps_inner=True,
               description="Starbucks SRL: the inner loss at every (layer, dim) pair each step + KL to the full model")
def starbucks(model, ctx: LossContext, *, pairs: list[list[int]] | None = None, weights: list[float] | None = None,
              kl_weight: float = 1.0, kl_temperature: float = 0.05):
    embedder = SubnetworkEmbedder(model)
    n, full = embedder.full_pair
    try:
        checked = validate_pairs(pairs, n, full) if pairs is not None else default_pairs(n, full)
    except ValueError as exc:
        raise ctx.error(str(exc), "params.pairs") from None
    if weights is not None and len(weights) != len(checked):
        raise ctx.error(f"weights has {len(weights)} values for {len(checked)} pairs", "params.weights")
    if weights is not None and any(w < 0 for w in weights):
        raise ctx.error("weights must be >= 0", "params.weights")
    inner = ctx.build_inner(model)
    return SubnetworkLoss(model, inner, FixedPairs(checked), kl_weight=kl_weight, kl_temperature=kl_temperature,
                          weights=dict(zip(checked, weights)) if weights else None, name="starbucks")

"""Starbucks representation learning (SRL): the inner loss on a fixed list of (layers, dims) pairs (``starbucks``).

Unlike 2DMSE, which samples one sub-network per step, Starbucks trains *every* pair of a fixed
small-to-large list each step, plus a KL term pulling each sub-network towards the full model. The default
list is the paper's ``(2,32) (4,64) (6,128) (8,256) (10,512) (12,768)`` scaled to the model's depth and width
(:func:`embedtrain.models.subnetworks.default_pairs`). Works with plain and GradCache inner losses and with
any data the inner loss takes (hard negatives included); see :mod:`embedtrain.losses.subnetwork_loss`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from embedtrain.losses.registry import ANY_FORMAT, register_loss
from embedtrain.losses.subnetwork_loss import SubnetworkLoss
from embedtrain.models.subnetworks import Pair, SubnetworkEmbedder, default_pairs, validate_pairs

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext


class FixedPairs:
    """Pair picker that returns the same list every step."""

    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs

    def __call__(self) -> list[Pair]:
        return self.pairs


@register_loss("starbucks", formats=ANY_FORMAT, wraps_inner=True,
               description="Starbucks SRL: the inner loss at every (layer, dim) pair each step + KL to the full model")
class StarbucksLoss(SubnetworkLoss):
    """Starbucks: the inner loss at every ``(layers, dims)`` pair of a fixed list each step, plus KL alignment
    of each sub-network to the full model.

    Args:
        model: the SentenceTransformer being trained.
        inner: the wrapped loss.
        pairs: ``[[layers, dims], ...]`` from small to large (default: the paper's list scaled to the model).
        weights: one weight per pair (default: equal).
        kl_weight / kl_temperature: weight and temperature of the alignment term.

    Inputs: whatever the inner loss takes.

    Example::

        loss: {name: starbucks, params: {pairs: [[2, 32], [4, 128], [6, 384]]}, inner: {name: cached_mnrl}}

    Citation: Zhuang et al., "Starbucks: Improved Training for 2D Matryoshka Embeddings", 2024
    (arXiv:2410.13230).
    """

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        if ctx.model_shape is not None and params.get("pairs") is not None:
            try:
                validate_pairs(params["pairs"], *ctx.model_shape)
            except ValueError as exc:
                raise ctx.error(str(exc), "params.pairs") from None

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, pairs: list[list[int]] | None = None,
                    weights: list[float] | None = None, kl_weight: float = 1.0, kl_temperature: float = 0.05):
        n, full = SubnetworkEmbedder(model).full_pair
        try:
            checked = validate_pairs(pairs, n, full) if pairs is not None else default_pairs(n, full)
        except ValueError as exc:
            raise ctx.error(str(exc), "params.pairs") from None
        if weights is not None and len(weights) != len(checked):
            raise ctx.error(f"weights has {len(weights)} values for {len(checked)} pairs", "params.weights")
        if weights is not None and any(w < 0 for w in weights):
            raise ctx.error("weights must be >= 0", "params.weights")
        return cls(model, ctx.build_inner(model), FixedPairs(checked), kl_weight=kl_weight,
                   kl_temperature=kl_temperature, weights=dict(zip(checked, weights)) if weights else None,
                   name="starbucks")

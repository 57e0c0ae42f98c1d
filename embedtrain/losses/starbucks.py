"""Starbucks representation learning (SRL): the inner loss on a fixed list of (layers, dims) pairs (``starbucks``).

Unlike 2DMSE, which samples one sub-network per step, Starbucks trains *every* pair of a fixed
small-to-large list each step, plus a KL term pulling each sub-network towards the full model. The default
list is the paper's ``(2,32) (4,64) (6,128) (8,256) (10,512) (12,768)`` scaled to the model's depth and width
(:func:`embedtrain.models.subnetworks.default_pairs`). Works with plain and GradCache inner losses and with
any data the inner loss takes (hard negatives included); see :mod:`embedtrain.losses.subnetwork_loss`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from embedtrain.losses.registry import ANY_FORMAT, register_loss
from embedtrain.losses.subnetwork_loss import Reduction, SubnetworkLoss
from embedtrain.models.subnetworks import Pair, SubnetworkEmbedder, default_pairs, validate_pairs

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext

StarbucksKL = Literal["auto", "layer_embeddings", "truncated_embeddings", "scores", "similarity"]


def starbucks_kl_form(kl: str, data_format: str | None) -> str:
    """``auto``: the form of the Starbucks reference code for this kind of data.

    Scored pairs (STS) -> ``truncated_embeddings`` (``sts/starbucks_loss.py``); pairs, triplets and hard
    negatives (retrieval) -> ``scores`` (``retrieval/modeling.py``).
    """
    if kl != "auto":
        return kl
    return "truncated_embeddings" if data_format == "scored_pairs" else "scores"


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
        kl: the alignment term (:mod:`embedtrain.losses.subnetwork_kl`). Default ``auto``, the form of the
            Starbucks reference code for the data: on scored pairs (STS) ``truncated_embeddings`` (KL between
            the softmax over the first ``d`` dims of each sub-network and of the full model, weight 0.3); on
            contrastive data (retrieval) ``scores`` (KL between the in-batch dot-product score distributions,
            T=1, weight 1). Alternatives: ``layer_embeddings`` (2DMSE), ``similarity`` (embedtrain's earlier
            form: cosine similarities at T=0.05).
        kl_weight / kl_temperature: ``null`` = the form's default.
        kl_detach_teacher: the full model gets no gradient from the KL terms (default true; the Starbucks
            STS code keeps that gradient, as sentence-transformers' ``AdaptiveLayerLoss`` did before it
            detached its teacher: set false to reproduce it exactly).
        reduction: ``sum`` (the paper: the inner losses of all pairs and the KL terms add up) or ``mean``
            (divided by the number of terms, resp. the sum of the weights: the scale of plain training).

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
                    weights: list[float] | None = None, kl: StarbucksKL = "auto", kl_weight: float | None = None,
                    kl_temperature: float | None = None, kl_detach_teacher: bool = True,
                    reduction: Reduction = "sum"):
        n, full = SubnetworkEmbedder(model).full_pair
        try:
            checked = validate_pairs(pairs, n, full) if pairs is not None else default_pairs(n, full)
        except ValueError as exc:
            raise ctx.error(str(exc), "params.pairs") from None
        if weights is not None and len(weights) != len(checked):
            raise ctx.error(f"weights has {len(weights)} values for {len(checked)} pairs", "params.weights")
        if weights is not None and any(w < 0 for w in weights):
            raise ctx.error("weights must be >= 0", "params.weights")
        return cls(model, ctx.build_inner(model), FixedPairs(checked), kl=starbucks_kl_form(kl, ctx.data_format),
                   kl_weight=kl_weight, kl_temperature=kl_temperature, kl_detach_teacher=kl_detach_teacher,
                   reduction=reduction, weights=dict(zip(checked, weights)) if weights else None, name="starbucks")

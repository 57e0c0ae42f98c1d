"""2D Matryoshka (2DMSE): the full model plus a random (layers, dims) sub-network per step (``matryoshka2d``).

Unlike sentence-transformers' ``Matryoshka2dLoss``, this runs on the shared sub-network engine
(:class:`~embedtrain.losses.subnetwork_loss.SubnetworkLoss`), so it also works with GradCache inner
losses (``cached_mnrl``, ``cached_gist``) and embeds every sub-network in one transformer pass.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from embedtrain.losses.matryoshka import checked_choices
from embedtrain.losses.registry import ANY_FORMAT, register_loss
from embedtrain.losses.subnetwork_kl import KLForm
from embedtrain.losses.subnetwork_loss import Reduction, SubnetworkLoss
from embedtrain.models.subnetworks import Pair, SubnetworkEmbedder, default_dims, default_layers

if TYPE_CHECKING:
    from embedtrain.losses.build import LossContext


class TwoDPicker:
    """2DMSE pair sampling: the full model plus a random (layer, dim) (and its marginals)."""

    def __init__(self, layers: list[int], dims: list[int], num_layers: int, dim: int, marginals: bool,
                 rng: random.Random | None = None) -> None:
        self.layers = [layer for layer in layers if layer < num_layers] or [num_layers]
        self.dims = [d for d in dims if d < dim] or [dim]
        self.full = (num_layers, dim)
        self.marginals = marginals
        self.rng = rng or random

    def __call__(self) -> list[Pair]:
        layer, d = self.rng.choice(self.layers), self.rng.choice(self.dims)
        pairs = [self.full, (layer, d)]
        if self.marginals:
            pairs += [(self.full[0], d), (layer, self.full[1])]
        return list(dict.fromkeys(pairs))


@register_loss("matryoshka2d", formats=ANY_FORMAT, wraps_inner=True,
               description="2DMSE: full model + one random (layer, dim) sub-network per step, KL-aligned")
class Matryoshka2dLoss(SubnetworkLoss):
    """2D Matryoshka Sentence Embeddings: each step trains the full model and one random sub-network
    ``(l, d)`` (first ``l`` layers, first ``d`` dims), with ``marginals`` also ``(last, d)`` and ``(l, full)``,
    plus a KL term aligning every sub-network with the full model.

    Args:
        model: the SentenceTransformer being trained.
        inner: the wrapped loss.
        layers / dims: the choices to sample from (default: the Starbucks lists scaled to the model).
        marginals: also train the drawn dim at full depth and the drawn depth at full width (as the paper).
        kl: the alignment term (:mod:`embedtrain.losses.subnetwork_kl`). Default ``layer_embeddings``, the
            2DMSE form of sentence-transformers' ``Matryoshka2dLoss`` / AnglE: KL between the softmax over
            the embedding dimensions of the drawn layer (full width) and of the last layer, at
            ``kl_temperature`` (default 0.3; AnglE uses 1.0), multiplied by the temperature, teacher detached.
            Alternatives: ``truncated_embeddings``, ``scores``, ``similarity`` (embedtrain's earlier form).
        kl_weight / kl_temperature: ``null`` = the form's default (weight 1, T 0.3 for ``layer_embeddings``).
        kl_detach_teacher: the full model gets no gradient from the KL term (default true).
        reduction: ``sum`` (sentence-transformers / the paper: the losses of every trained sub-network and
            the KL terms add up) or ``mean`` (divided by their number: the scale of plain training).

    Inputs: whatever the inner loss takes.

    Example::

        loss: {name: matryoshka2d, params: {layers: [2, 4], dims: [64, 128]}, inner: {name: cosent}}

    Citation: Li et al., "2D Matryoshka Sentence Embeddings", 2024 (arXiv:2402.14776).
    """

    @classmethod
    def check_recipe(cls, ctx: LossContext, params: dict) -> None:
        if ctx.model_shape is None:
            return
        if params.get("layers") is not None:
            checked_choices(ctx, "layers", params["layers"], ctx.model_shape[0], "layers")
        if params.get("dims") is not None:
            checked_choices(ctx, "dims", params["dims"], ctx.model_shape[1], "dims")

    @classmethod
    def from_recipe(cls, model, ctx: LossContext, *, layers: list[int] | None = None, dims: list[int] | None = None,
                    marginals: bool = True, kl: KLForm = "layer_embeddings", kl_weight: float | None = None,
                    kl_temperature: float | None = None, kl_detach_teacher: bool = True,
                    reduction: Reduction = "sum"):
        n, full = SubnetworkEmbedder(model).full_pair
        layers = checked_choices(ctx, "layers", layers if layers is not None else default_layers(n), n, "layers")
        dims = checked_choices(ctx, "dims", dims if dims is not None else default_dims(full), full, "dims")
        picker = TwoDPicker(layers, dims, n, full, marginals)
        return cls(model, ctx.build_inner(model), picker, kl=kl, kl_weight=kl_weight, kl_temperature=kl_temperature,
                   kl_detach_teacher=kl_detach_teacher, reduction=reduction, name="matryoshka2d")

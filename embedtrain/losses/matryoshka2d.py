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
from embedtrain.losses.subnetwork_loss import SubnetworkLoss
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
        kl_weight / kl_temperature: weight and temperature of the alignment term.

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
                    marginals: bool = True, kl_weight: float = 1.0, kl_temperature: float = 0.05):
        n, full = SubnetworkEmbedder(model).full_pair
        layers = checked_choices(ctx, "layers", layers if layers is not None else default_layers(n), n, "layers")
        dims = checked_choices(ctx, "dims", dims if dims is not None else default_dims(full), full, "dims")
        picker = TwoDPicker(layers, dims, n, full, marginals)
        return cls(model, ctx.build_inner(model), picker, kl_weight=kl_weight, kl_temperature=kl_temperature,
                   name="matryoshka2d")
